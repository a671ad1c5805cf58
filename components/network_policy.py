"""NetworkPolicies derived from a stack's own objects: deny everything, then allow what it uses.

Who talks to whom is read from the objects, never listed by hand (components/topology.py, which
also draws the diagrams):

- a workload calls a Service when its containers or mounted config name it as a host;
- a workload that calls a Service in front of its own pods is a cluster member (Redis Cluster
  shards, NATS routes): it may reach every workload behind that Service on every port, since
  cluster protocols use ports no Service lists (the Redis cluster bus is the client port + 10000);
- a route (HTTPRoute) reaches the workloads behind its backend Services from the pods of the
  Gateway it attaches to (an Ingress: from its controller, wherever that runs);
- a KEDA ScaledObject whose trigger asks a Service (metrics-api's URL, nats-jetstream's monitoring
  endpoint) reaches the workloads behind it on that port, from KEDA's operator pods (namespace
  `keda`, the chart's release namespace);
- every pod resolves names through kube-dns.

Each call becomes an egress rule on the caller and the matching ingress rule on the callee, on the
callee's container port. A workload whose pods mount their ServiceAccount token (Patroni's) may
also reach the API server: its address is the cluster's, so the rule names only its ports. Kubelet
probes need no rule: traffic from the node a pod runs on is always allowed
(https://kubernetes.io/docs/concepts/services-networking/network-policies/, "IP blocks").
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from components import topology
from components.labels import Meta
from components.topology import pod_labels, pod_selector, selects, workloads

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
DNS_NAMESPACE = {NAMESPACE_LABEL: "kube-system"}
DNS_PODS = {"k8s-app": "kube-dns"}
DNS_PORT = 53
DNS_PORTS: tuple[dict[str, Any], ...] = ({"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT})
API_SERVER_PORTS: tuple[dict[str, Any], ...] = ({"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443})
"""The `kubernetes` Service's port and the API server's own (kind's), which the Service forwards to."""
GATEWAY_LABEL = "gateway.envoyproxy.io/owning-gateway-{}"
"""Envoy Gateway labels its proxy pods with the Gateway they serve, in whichever namespace they run."""
KEDA_OPERATOR = (("app", "keda-operator"),)
"""The KEDA chart's operator pods (its own Service selects them by this label)."""
KEDA_NAMESPACE = "keda"
"""Where the cluster layer installs KEDA (charts/keda.yaml)."""


@dataclass(frozen=True)
class Flow:
    """`client` pods open connections to `server` pods on `port`; `client` None: from outside the stack."""

    client: str | None
    server: str
    port: int | None
    """None: every port (members of one cluster)."""
    protocol: str
    peer: tuple[tuple[str, str], ...] = ()
    """For an outside client: labels of its pods; empty: any pod of any namespace."""
    peer_namespace: str = ""
    """For an outside client with `peer` labels: the namespace of its pods; empty: any namespace."""


def _container_port(workload: dict[str, Any], target: int | str) -> int | None:
    if isinstance(target, int):
        return target
    pod = workload["spec"]["template"]["spec"]
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        for port in container.get("ports", []):
            if port.get("name") == target:
                number: int = port["containerPort"]
                return number
    return None


def _service_flows(
    service: dict[str, Any],
    objects: list[dict[str, Any]],
    client: str | None,
    peer: tuple[tuple[str, str], ...],
    peer_namespace: str = "",
    only_port: int | None = None,
) -> list[Flow]:
    """Connections to the pods behind `service`: those its selector matches that serve its ports
    (every port when `client` is behind it too: a member of the cluster the Service fronts), or
    only its port `only_port` when given."""
    selector = service["spec"].get("selector") or {}
    servers = [w for w in workloads(objects) if selects(selector, pod_labels(w))]
    member = any(server["metadata"]["name"] == client for server in servers)
    found = []
    for server in servers:
        name = server["metadata"]["name"]
        ports = [
            (number, port.get("protocol", "TCP"))
            for port in service["spec"].get("ports", [])
            if only_port in (None, port["port"])
            and (number := _container_port(server, port.get("targetPort", port["port"]))) is not None
        ]
        if ports and member:
            found.append(Flow(client, name, None, "any"))
        else:
            found += [Flow(client, name, number, protocol, peer, peer_namespace) for number, protocol in ports]
    return found


def _gateway_peers(route: dict[str, Any]) -> list[tuple[tuple[str, str], ...]]:
    """Labels of the pods that forward a route's traffic: a Gateway's proxies; an Ingress: anyone."""
    if route["kind"] != "HTTPRoute":
        return [()]
    return [
        (
            (GATEWAY_LABEL.format("name"), parent["name"]),
            (GATEWAY_LABEL.format("namespace"), parent.get("namespace", route["metadata"].get("namespace", ""))),
        )
        for parent in route["spec"].get("parentRefs", [])
    ]


def flows(objects: list[dict[str, Any]]) -> list[Flow]:
    """Every connection the stack's pods need, in the order of the objects."""
    found: list[Flow] = []
    for workload, service in topology.calls(objects):
        found += _service_flows(service, objects, workload["metadata"]["name"], ())
    for route, service in topology.routes(objects):
        for peer in _gateway_peers(route):
            found += _service_flows(service, objects, None, peer)
    for _, service, port in topology.scaler_queries(objects):
        found += _service_flows(service, objects, None, KEDA_OPERATOR, KEDA_NAMESPACE, only_port=port)
    return list(dict.fromkeys(found))


def _policy(
    meta: Meta, name: str, selector: dict[str, str], spec: dict[str, Any], *, owner: str | None = None
) -> dict[str, Any]:
    """A NetworkPolicy `name`, labelled as part of `owner` (the workload it guards; default: itself)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta.metadata(owner or name, "network-policy", object_name=name),
        "spec": {"podSelector": {"matchLabels": selector} if selector else {}, **spec},
    }


def _ports(found: list[Flow]) -> dict[str, Any]:
    """`ports` of a rule: the flows' ports; none (every port) when one flow needs every port."""
    if any(flow.port is None for flow in found):
        return {}
    unique = dict.fromkeys((flow.protocol, flow.port) for flow in found)
    return {"ports": [{"protocol": protocol, "port": port} for protocol, port in unique]}


def _peer(flow: Flow, selectors: dict[str, dict[str, str]]) -> dict[str, Any]:
    if flow.client is not None:
        return {"podSelector": {"matchLabels": selectors[flow.client]}}
    if flow.peer:
        namespaces = {"matchLabels": {NAMESPACE_LABEL: flow.peer_namespace}} if flow.peer_namespace else {}
        return {"namespaceSelector": namespaces, "podSelector": {"matchLabels": dict(flow.peer)}}
    return {"namespaceSelector": {}}


def _grouped(found: list[Flow], key: Callable[[Flow], Hashable]) -> list[list[Flow]]:
    groups: dict[Hashable, list[Flow]] = {}
    for flow in found:
        groups.setdefault(key(flow), []).append(flow)
    return list(groups.values())


def _dns_policy(meta: Meta) -> dict[str, Any]:
    dns = {"namespaceSelector": {"matchLabels": DNS_NAMESPACE}, "podSelector": {"matchLabels": DNS_PODS}}
    return _policy(
        meta, "allow-dns", {}, {"policyTypes": ["Egress"], "egress": [{"to": [dns], "ports": list(DNS_PORTS)}]}
    )


def _ingress(meta: Meta, name: str, incoming: list[Flow], selectors: dict[str, dict[str, str]]) -> dict[str, Any]:
    """`<name>-ingress`: one rule per caller (a workload, or the pods a route comes from)."""
    rules = [
        {"from": [_peer(group[0], selectors)], **_ports(group)}
        for group in _grouped(incoming, lambda flow: (flow.client, flow.peer, flow.peer_namespace))
    ]
    spec = {"policyTypes": ["Ingress"], "ingress": rules}
    return _policy(meta, f"{name}-ingress", selectors[name], spec, owner=name)


def uses_api_server(workload: dict[str, Any]) -> bool:
    """The workload's pods mount their ServiceAccount token: they talk to the API server."""
    return workload["spec"]["template"]["spec"].get("automountServiceAccountToken") is True


def _egress(
    meta: Meta, name: str, outgoing: list[Flow], selectors: dict[str, dict[str, str]], *, api_server: bool
) -> dict[str, Any]:
    """`<name>-egress`: one rule per workload it calls, and one to the API server's ports if it uses it."""
    rules = [
        {"to": [{"podSelector": {"matchLabels": selectors[group[0].server]}}], **_ports(group)}
        for group in _grouped(outgoing, lambda flow: flow.server)
    ]
    if api_server:
        rules.append({"ports": list(API_SERVER_PORTS)})
    spec = {"policyTypes": ["Egress"], "egress": rules}
    return _policy(meta, f"{name}-egress", selectors[name], spec, owner=name)


def network_policies(meta: Meta, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Default deny (ingress and egress) for the namespace, DNS for all pods, then per workload:
    `<name>-ingress` from its callers and `<name>-egress` to what it calls. None without workloads."""
    pods = workloads(objects)
    if not pods:
        return []
    selectors = {w["metadata"]["name"]: pod_selector(w) for w in pods}
    needed = flows(objects)
    policies = [_policy(meta, "default-deny", {}, {"policyTypes": ["Ingress", "Egress"]}), _dns_policy(meta)]
    for workload in pods:
        name = workload["metadata"]["name"]
        incoming = [flow for flow in needed if flow.server == name]
        if incoming:
            policies.append(_ingress(meta, name, incoming, selectors))
        outgoing = [flow for flow in needed if flow.client == name]
        if outgoing or uses_api_server(workload):
            policies.append(_egress(meta, name, outgoing, selectors, api_server=uses_api_server(workload)))
    return policies
