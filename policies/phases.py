"""Stack rules on the ladder itself: a stack of phase N has what phase N is about.

Phases are cumulative, so each rule applies from its phase up; stacks of the cluster layer (phase
None) have no rung.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from components import circuit_breaker, web
from policies.availability import autoscalers, target
from policies.model import WORKLOAD_KINDS, Finding, Object, containers, pod_spec, pod_template_labels


def _stack(objects: list[Object]) -> Object:
    """What a stack-wide finding is reported against: the stack's Namespace."""
    return next((o for o in objects if o.get("kind") == "Namespace"), {"kind": "Stack", "metadata": {"name": "?"}})


def _repository(image: str) -> str:
    """`docker.io/library/varnish:7.1.2@sha256:...` -> `varnish`."""
    last = image.partition("@")[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def _workloads(objects: list[Object]) -> list[Object]:
    return [o for o in objects if o.get("kind") in WORKLOAD_KINDS]


def _mounted_text(workload: Object, objects: list[Object]) -> str:
    found = pod_spec(workload)
    volumes = found[1].get("volumes") or [] if found else []
    names = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    return "\n".join(
        str(value)
        for o in objects
        if o.get("kind") == "ConfigMap" and o["metadata"]["name"] in names
        for value in (o.get("data") or {}).values()
    )


def web_autoscaled(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    if phase is None or phase < 3:
        return
    targets = {name for kind, name in map(target, autoscalers(objects)) if kind == "Deployment"}
    serving = [
        o
        for o in objects
        if o.get("kind") == "Deployment" and any(c.spec.get("args") == [web.Tier().command] for c in containers(o))
    ]
    if not serving:
        yield (
            _stack(objects),
            f"phase {phase} stack: no Deployment runs the web tier (`sample {web.Tier().command}`); fix: deploy it",
        )
    for deployment in (o for o in serving if o["metadata"]["name"] not in targets):
        yield (
            _stack(objects),
            f"phase {phase} stack: Deployment/{deployment['metadata']['name']} serves the web tier but is not the "
            "scaleTargetRef of any HorizontalPodAutoscaler or ScaledObject; fix: enable web.autoscaling (phase 3 and "
            "up scale the web tier horizontally)",
        )


def redis_cluster(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    if phase is None or phase < 4:
        return
    clustered = [
        o
        for o in objects
        if o.get("kind") == "StatefulSet"
        and re.search(r"^cluster-enabled\s+yes\s*$", _mounted_text(o, objects), re.MULTILINE)
        and any(_repository(str(c.spec.get("image", ""))) == "redis" for c in containers(o))
    ]
    if not clustered:
        yield (
            _stack(objects),
            f"phase {phase} stack: no StatefulSet runs redis with `cluster-enabled yes` in its mounted redis.conf; "
            "fix: set redis.mode: cluster (phase 4 and up cache in a Redis Cluster)",
        )


def edge_cache(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    if phase is None or phase < 5:
        return
    services = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Service"}
    fronts = []
    for route in (o for o in objects if o.get("kind") == "HTTPRoute"):
        for rule in route["spec"].get("rules") or []:
            for backend in rule.get("backendRefs") or []:
                selector = (services.get(backend["name"]) or {}).get("spec", {}).get("selector") or {}
                fronts += [
                    w for w in _workloads(objects) if selector and selector.items() <= pod_template_labels(w).items()
                ]
    if not any(_repository(str(c.spec.get("image", ""))) == "varnish" for w in fronts for c in containers(w)):
        yield (
            _stack(objects),
            f"phase {phase} stack: no HTTPRoute sends traffic to a Varnish edge cache; fix: enable the edge cache and "
            "route to its Service (phase 5 and up serve cacheable responses from the edge)",
        )


def queue_and_breakers(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    if phase is None or phase < 6:
        return
    jetstream = [
        w
        for w in _workloads(objects)
        if any(_repository(str(c.spec.get("image", ""))) == "nats" for c in containers(w))
        and "jetstream" in _mounted_text(w, objects)
    ]
    if not jetstream:
        yield (
            _stack(objects),
            f"phase {phase} stack: no workload runs nats-server with JetStream configured in a mounted ConfigMap; "
            "fix: enable the queue (phase 6 hands slow work to JetStream workers)",
        )
    if not any(c.name == circuit_breaker.NAME for w in _workloads(objects) for c in containers(w)):
        yield (
            _stack(objects),
            f"phase {phase} stack: no pod has a {circuit_breaker.NAME} (Envoy) sidecar; fix: put service-to-service "
            "calls behind circuit breakers (phase 6)",
        )
