"""NetworkPolicies derived from a stack's own objects: deny everything, then allow what it uses.

Who talks to whom is read from the objects, never listed by hand:

- a workload calls a Service when its containers name it as a host: `postgres-rw:5432` or
  `redis://redis:6379` in env, args or command (the edges `components.diagram.edges` draws); an
  env var `*_HOST` whose value is the Service (`PRIMARY_HOST=postgres-rw`); `host=<service>` or
  `<service>:<port>` in a ConfigMap the pod mounts (PgBouncer's `[databases]`, a Varnish backend's
  `.host`, a members file); the Service's DNS name anywhere (`edge-cache-peers.<ns>.svc`); or a pod
  of a headless Service by its DNS name (`redis-0.redis-nodes.<ns>.svc:6379`);
- a workload that calls its own pods is a cluster (Redis Cluster, NATS routes): its members may
  reach each other on every port, since cluster protocols use ports no Service lists (the Redis
  cluster bus is the client port + 10000);
- a route (HTTPRoute) reaches the workloads behind its backend Services from the pods of the
  Gateway it attaches to (an Ingress: from its controller, wherever that runs);
- every pod resolves names through kube-dns.

Each call becomes an egress rule on the caller and the matching ingress rule on the callee, on the
callee's container port. Kubelet probes need no rule: traffic from the node a pod runs on is always
allowed (https://kubernetes.io/docs/concepts/services-networking/network-policies/, "IP blocks").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from components import diagram
from components.labels import Meta

DNS_NAMESPACE = {"kubernetes.io/metadata.name": "kube-system"}
DNS_PODS = {"k8s-app": "kube-dns"}
DNS_PORT = 53
DNS_PORTS: tuple[dict[str, Any], ...] = ({"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT})
GATEWAY_LABEL = "gateway.envoyproxy.io/owning-gateway-{}"
"""Envoy Gateway labels its proxy pods with the Gateway they serve, in whichever namespace they run."""

_CONFIG_HOST = re.compile(r"(?<![\w-])host\s*=\s*\"?([\w][\w.-]*)")
"""`host=postgres-rw` (libpq, PgBouncer) and `.host = "web";` (a Varnish backend)."""
_HOST_PORT = re.compile(r"(?<![\w.$-])([A-Za-z0-9][\w-]*(?:\.[\w-]+)*):\d+")
_SERVICE_DNS = re.compile(r"(?<![\w.-])([A-Za-z0-9][\w-]*(?:\.[\w-]+)*\.svc)(?![\w-])")
"""A Service's DNS name, port or not: `edge-cache-peers.scaleladder-phase5.svc.cluster.local`."""


@dataclass(frozen=True)
class Flow:
    """`client` pods open connections to `server` pods on `port`; `client` None: from outside the stack."""

    client: str | None
    server: str
    port: int | None
    """None: every port (members of one cluster)."""
    protocol: str
    peer: tuple[tuple[str, str], ...] = ()
    """For an outside client: labels of its pods (any namespace); empty: any pod of any namespace."""


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in diagram.WORKLOADS]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def pod_selector(workload: dict[str, Any]) -> dict[str, str]:
    """The workload's selector narrowed by its pods' component, so that a Job sharing an app's name
    (`redis` and its bootstrap Job) is not taken for it; a Job's pods: their labels but the version."""
    labels = pod_labels(workload)
    selector: dict[str, str] = workload["spec"].get("selector", {}).get("matchLabels") or {
        k: v for k, v in labels.items() if k != "app.kubernetes.io/version"
    }
    component = "app.kubernetes.io/component"
    return {**selector, **({component: labels[component]} if component in labels else {})}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def _mounted_config_text(workload: dict[str, Any], objects: list[dict[str, Any]]) -> str:
    pod = workload["spec"]["template"]["spec"]
    names = {v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
    maps = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] in names]
    return "\n".join(str(value) for cm in maps for value in cm.get("data", {}).values())


def _container_texts(workload: dict[str, Any]) -> list[str]:
    pod = workload["spec"]["template"]["spec"]
    texts = []
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        texts += [str(env["value"]) for env in container.get("env", []) if "value" in env]
        texts += [str(arg) for arg in container.get("args", []) + container.get("command", [])]
    return texts


def _host_env(workload: dict[str, Any]) -> list[str]:
    pod = workload["spec"]["template"]["spec"]
    return [
        str(env["value"])
        for container in [*pod.get("initContainers", []), *pod["containers"]]
        for env in container.get("env", [])
        if env["name"].endswith("_HOST") and "value" in env
    ]


def _hosts(workload: dict[str, Any], objects: list[dict[str, Any]]) -> list[str]:
    """Host names the workload's pods connect to, beyond the `name:port` edges of the diagram."""
    config = _mounted_config_text(workload, objects)
    texts = "\n".join([*_container_texts(workload), config])
    found = [*_CONFIG_HOST.findall(config), *_HOST_PORT.findall(texts), *_SERVICE_DNS.findall(texts)]
    return [*_host_env(workload), *found]


def _names(host: str, service: dict[str, Any]) -> bool:
    """`host` is the Service (`redis`, `redis.<ns>`, `redis.<ns>.svc...`) or, for a headless one, one
    of its pods (`redis-0.redis-nodes...`); a name in another namespace is not."""
    labels = host.split(".")
    if "svc" in labels[2:]:
        end = labels.index("svc", 2)
        if labels[end - 1] != service["metadata"].get("namespace", labels[end - 1]):
            return False
        labels = labels[: end - 1]
    name = service["metadata"]["name"]
    headless = service["spec"].get("clusterIP") == "None"
    return labels[0] == name or (headless and len(labels) > 1 and labels[1] == name)


def calls(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, Service) pairs: the workload connects to the Service (see the module docstring)."""
    by_id = {diagram.node_id(o): o for o in objects}
    found = [
        (by_id[source], by_id[target])
        for source, target in diagram.edges(objects)
        if by_id[source]["kind"] in diagram.WORKLOADS and by_id[target]["kind"] == "Service"
    ]
    services = [o for o in objects if o["kind"] == "Service"]
    for workload in workloads(objects):
        hosts = _hosts(workload, objects)
        found += [(workload, service) for service in services if any(_names(host, service) for host in hosts)]
    return list({(diagram.node_id(w), diagram.node_id(s)): (w, s) for w, s in found}.values())


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
    service: dict[str, Any], objects: list[dict[str, Any]], client: str | None, peer: tuple[tuple[str, str], ...]
) -> list[Flow]:
    """Connections to the pods behind `service`: those its selector matches that serve its ports."""
    selector = service["spec"].get("selector") or {}
    found = []
    for server in (w for w in workloads(objects) if selects(selector, pod_labels(w))):
        name = server["metadata"]["name"]
        ports = [
            (number, port.get("protocol", "TCP"))
            for port in service["spec"].get("ports", [])
            if (number := _container_port(server, port.get("targetPort", port["port"]))) is not None
        ]
        if ports and name == client:
            found.append(Flow(client, name, None, "any"))
        else:
            found += [Flow(client, name, number, protocol, peer) for number, protocol in ports]
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
    services = {diagram.node_id(o): o for o in objects if o["kind"] == "Service"}
    found: list[Flow] = []
    for workload, service in calls(objects):
        found += _service_flows(service, objects, workload["metadata"]["name"], ())
    for route in (o for o in objects if o["kind"] in diagram.ROUTES):
        backends = [services[target] for _, target in diagram.edges([route]) if target in services]
        for peer in _gateway_peers(route):
            for service in backends:
                found += _service_flows(service, objects, None, peer)
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
        return {"namespaceSelector": {}, "podSelector": {"matchLabels": dict(flow.peer)}}
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
        for group in _grouped(incoming, lambda flow: (flow.client, flow.peer))
    ]
    spec = {"policyTypes": ["Ingress"], "ingress": rules}
    return _policy(meta, f"{name}-ingress", selectors[name], spec, owner=name)


def _egress(meta: Meta, name: str, outgoing: list[Flow], selectors: dict[str, dict[str, str]]) -> dict[str, Any]:
    """`<name>-egress`: one rule per workload it calls."""
    rules = [
        {"to": [{"podSelector": {"matchLabels": selectors[group[0].server]}}], **_ports(group)}
        for group in _grouped(outgoing, lambda flow: flow.server)
    ]
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
        if outgoing:
            policies.append(_egress(meta, name, outgoing, selectors))
    return policies
