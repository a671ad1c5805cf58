"""Stack rules on NetworkPolicies: deny by default, then allow exactly the connections the stack makes.

The connections a stack needs come from `components.network_policy.flows` (read from the objects:
who names which Service as a host, which routes reach which Services). These rules do not compare
against the builder's output: they evaluate the stack's NetworkPolicies the way the network plugin
does (policies select pods by labels, peers match pods by labels, ports by number or name) and
check that every needed connection is admitted on both ends, and nothing else is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from components import network_policy as derive
from components import topology
from policies.model import Finding, Object, ref


def _policies(objects: list[Object]) -> list[Object]:
    return [o for o in objects if o.get("kind") == "NetworkPolicy"]


def _match(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A label selector as the API reads it: empty selects everything (expressions unsupported: no match)."""
    selector = selector or {}
    if selector.get("matchExpressions"):
        return False
    return (selector.get("matchLabels") or {}).items() <= labels.items()


def _types(policy: Object) -> list[str]:
    declared: list[str] | None = policy["spec"].get("policyTypes")
    return declared or ["Ingress", *(["Egress"] if "egress" in policy["spec"] else [])]


def _applying(policies: list[Object], labels: dict[str, str], direction: str) -> list[Object]:
    return [p for p in policies if direction in _types(p) and _match(p["spec"].get("podSelector"), labels)]


def _rules(policy: Object, direction: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = policy["spec"].get("ingress" if direction == "Ingress" else "egress") or []
    return rules


def _peers(rule: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = rule.get("from" if direction == "Ingress" else "to") or []
    return peers


def _port_ok(rule: dict[str, Any], port: int | None, protocol: str, server: Object | None) -> bool:
    """The rule admits `protocol/port` (port None: it must admit every port)."""
    ports = rule.get("ports") or []
    if port is None:
        return not ports
    names = _port_names(server) if server is not None else {}
    return not ports or any(
        p.get("protocol", "TCP") == protocol and (p.get("port") == port or names.get(str(p.get("port"))) == port)
        for p in ports
    )


def _port_names(workload: Object) -> dict[str, int]:
    pod = workload["spec"]["template"]["spec"]
    return {
        port["name"]: port["containerPort"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]
        for port in container.get("ports", [])
        if "name" in port
    }


def _in_stack_peer(peer: dict[str, Any], labels: dict[str, str], namespace: str) -> bool:
    """The peer admits pods with `labels` in the policy's own namespace."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer and not _match(
        peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}
    ):
        return False
    return _match(peer.get("podSelector"), labels)


def _outside_peer(peer: dict[str, Any], flow: derive.Flow) -> bool:
    """The peer admits the pods outside the stack that `flow` comes from (a Gateway's proxies, anyone)."""
    if "namespaceSelector" not in peer:
        return False
    if flow.peer_namespace and not _match(peer["namespaceSelector"], {derive.NAMESPACE_LABEL: flow.peer_namespace}):
        return False
    return _match(peer.get("podSelector"), dict(flow.peer)) if flow.peer else not peer.get("podSelector")


def _admits(
    policies: list[Object],
    pods: dict[str, str],
    direction: str,
    peer_ok: Any,
    port: int | None,
    protocol: str,
    server: Object,
) -> bool:
    return any(
        any(peer_ok(peer) for peer in _peers(rule, direction)) and _port_ok(rule, port, protocol, server)
        for policy in _applying(policies, pods, direction)
        for rule in _rules(policy, direction)
    )


def network_default_deny(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    namespaces = {w["metadata"].get("namespace", "") for w in topology.workloads(objects)}
    for namespace in sorted(namespaces):
        deny = [
            p
            for p in _policies(objects)
            if p["metadata"].get("namespace", "") == namespace
            and not (p["spec"].get("podSelector") or {}).get("matchLabels")
            and not (p["spec"].get("podSelector") or {}).get("matchExpressions")
            and {"Ingress", "Egress"} <= set(_types(p))
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
        ]
        if not deny:
            target = next(
                (o for o in objects if o.get("kind") == "Namespace" and o["metadata"]["name"] == namespace),
                {"kind": "Namespace", "metadata": {"name": namespace}},
            )
            yield (
                target,
                f"Namespace/{namespace} has no default-deny NetworkPolicy (spec.podSelector: {{}}, policyTypes: "
                "[Ingress, Egress], no rules); fix: add one (components.network_policy.network_policies)",
            )


def _needed_admitted(objects: list[Object], policies: list[Object]) -> Iterator[Finding]:
    named = {w["metadata"]["name"]: w for w in topology.workloads(objects)}
    for flow in derive.flows(objects):
        server = named[flow.server]
        namespace = server["metadata"].get("namespace", "")
        if flow.client is None:
            origin, needer = "the Ingress controller", "its route"
            if flow.peer:
                origin = f"the Gateway's proxies {dict(flow.peer)}"
            if flow.peer_namespace:
                origin, needer = f"the pods {dict(flow.peer)} of namespace {flow.peer_namespace}", "its autoscaler"
            if not _admits(
                policies,
                topology.pod_labels(server),
                "Ingress",
                lambda peer, f=flow: _outside_peer(peer, f),
                flow.port,
                flow.protocol,
                server,
            ):
                yield (
                    server,
                    f"{ref(server)}: no NetworkPolicy admits ingress from {origin} {_where(flow)}, which {needer} "
                    f"needs; fix: allow it in {flow.server}-ingress",
                )
            continue
        client = named[flow.client]
        sides = [
            ("Ingress", server, topology.pod_labels(client), f"{flow.server}-ingress"),
            ("Egress", client, topology.pod_labels(server), f"{flow.client}-egress"),
        ]
        for direction, guarded, other, fix in sides:
            if not _admits(
                policies,
                topology.pod_labels(guarded),
                direction,
                lambda peer, labels=other, ns=namespace: _in_stack_peer(peer, labels, ns),
                flow.port,
                flow.protocol,
                server,
            ):
                yield (
                    guarded,
                    f"{ref(guarded)}: no NetworkPolicy admits {direction.lower()} for {flow.client} -> {flow.server} "
                    f"{_where(flow)}, which {flow.client} uses; fix: allow it in {fix}",
                )


def _dns_admitted(objects: list[Object], policies: list[Object]) -> Iterator[Finding]:
    for workload in topology.workloads(objects):
        rules = [r for p in _applying(policies, topology.pod_labels(workload), "Egress") for r in _rules(p, "Egress")]
        for protocol in ("UDP", "TCP"):
            if not any(
                any(_is_dns(peer) for peer in _peers(r, "Egress")) and _port_ok(r, derive.DNS_PORT, protocol, None)
                for r in rules
            ):
                yield (
                    workload,
                    f"{ref(workload)}: no NetworkPolicy admits egress to kube-dns on {protocol}/53, so "
                    "its pods cannot resolve Service names; fix: add the allow-dns policy",
                )


def _is_dns(peer: dict[str, Any]) -> bool:
    return (peer.get("namespaceSelector") or {}).get("matchLabels") == derive.DNS_NAMESPACE and (
        peer.get("podSelector") or {}
    ).get("matchLabels") == derive.DNS_PODS


def _rule_excess(
    policy: Object, direction: str, rule: dict[str, Any], objects: list[Object], needed: set[tuple[Any, ...]]
) -> Iterator[str]:
    """What one allow rule admits beyond the needed connections."""
    namespace = policy["metadata"].get("namespace", "")
    guarded = [
        w for w in topology.workloads(objects) if _match(policy["spec"].get("podSelector"), topology.pod_labels(w))
    ]
    peers = _peers(rule, direction)
    if not peers and direction == "Egress" and list(rule.get("ports") or []) == list(derive.API_SERVER_PORTS):
        users = [w for w in guarded if derive.uses_api_server(w)]
        if len(users) < len(guarded) or not guarded:
            yield "admits the API server's ports to pods that do not mount a ServiceAccount token"
        return
    if not peers:
        yield "admits every peer (no from/to)"
    for peer in peers:
        if direction == "Egress" and _is_dns(peer):
            if not rule.get("ports") or any(p.get("port") != derive.DNS_PORT for p in rule["ports"]):
                yield "admits kube-dns on a port other than 53"
            continue
        if "ipBlock" in peer:
            yield f"admits ipBlock {peer['ipBlock'].get('cidr')}, which nothing in the stack uses"
            continue
        if "namespaceSelector" in peer and direction == "Ingress":
            labels = tuple(sorted(((peer.get("podSelector") or {}).get("matchLabels") or {}).items()))
            namespaces = (peer["namespaceSelector"] or {}).get("matchLabels") or {}
            where = namespaces.get(derive.NAMESPACE_LABEL, "")
            for workload in guarded:
                for port in rule.get("ports") or [None]:
                    number = _number(port, workload)
                    if ("outside", labels, where, workload["metadata"]["name"], number) not in needed:
                        yield f"admits {peer} to {ref(workload)} {_on(port)}, which no route or scaler needs"
            continue
        if "namespaceSelector" in peer:
            yield f"admits {peer}, pods of other namespaces, which no workload of the stack calls"
            continue
        matched = [w for w in topology.workloads(objects) if _in_stack_peer(peer, topology.pod_labels(w), namespace)]
        if not matched:
            yield f"admits {peer}, which matches no workload in the stack"
        for workload in guarded:
            for other in matched:
                client, server = (other, workload) if direction == "Ingress" else (workload, other)
                for port in rule.get("ports") or [None]:
                    key = (client["metadata"]["name"], server["metadata"]["name"], _number(port, server))
                    if key not in needed:
                        yield (
                            f"admits {client['metadata']['name']} -> {server['metadata']['name']} {_on(port)}, "
                            f"which {client['metadata']['name']} never uses"
                        )


def _where(flow: derive.Flow) -> str:
    return "on every port" if flow.port is None else f"on {flow.protocol}/{flow.port}"


def _number(port: dict[str, Any] | None, server: Object) -> int | None:
    """A rule's port as a number (named ports looked up on the server's containers); None: every port."""
    if port is None:
        return None
    value = port.get("port")
    number: int | None = _port_names(server).get(str(value), value) if value is not None else None
    return number


def _on(port: dict[str, Any] | None) -> str:
    return "on every port (no ports)" if port is None else f"on port {port.get('port')}"


def _excess(objects: list[Object], policies: list[Object]) -> Iterator[Finding]:
    needed: set[tuple[Any, ...]] = set()
    for flow in derive.flows(objects):
        if flow.client is None:
            needed.add(("outside", tuple(sorted(flow.peer)), flow.peer_namespace, flow.server, flow.port))
        else:
            needed.add((flow.client, flow.server, flow.port))
    for policy in policies:
        if not any(
            _match(policy["spec"].get("podSelector"), topology.pod_labels(w)) for w in topology.workloads(objects)
        ):
            yield policy, f"{ref(policy)}: spec.podSelector selects no workload in the stack; fix: remove it"
            continue
        for direction in ("Ingress", "Egress"):
            for index, rule in enumerate(_rules(policy, direction)):
                field = f"spec.{direction.lower()}[{index}]"
                for excess in dict.fromkeys(_rule_excess(policy, direction, rule, objects, needed)):
                    yield policy, f"{ref(policy)}: {field} {excess}; fix: allow only the connections the stack makes"


def network_allows(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    if not topology.workloads(objects):
        return
    policies = _policies(objects)
    yield from _needed_admitted(objects, policies)
    yield from _dns_admitted(objects, policies)
    yield from _excess(objects, policies)
