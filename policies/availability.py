"""Stack rules on replicas: disruption budgets, autoscaler targets and topology spread."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from policies.model import WORKLOAD_KINDS, Finding, Object, pod_template_labels, ref, set_by_deployer

SCALABLE = ("Deployment", "StatefulSet", "ReplicaSet")


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and match.items() <= labels.items()


AUTOSCALERS = ("HorizontalPodAutoscaler", "ScaledObject")
"""What owns a workload's replica count: an HPA, or a KEDA ScaledObject (which creates its own HPA)."""


@dataclass(frozen=True)
class Scale:
    """How many pods a workload runs: fixed, or between an autoscaler's bounds."""

    workload: Object
    minimum: int
    maximum: int
    autoscaler: Object | None


def target(autoscaler: Object) -> tuple[str, str]:
    """(kind, name) of the workload an HPA or a ScaledObject scales (KEDA's kind defaults to Deployment)."""
    ref_ = autoscaler["spec"]["scaleTargetRef"]
    default = "Deployment" if autoscaler["kind"] == "ScaledObject" else None
    return ref_.get("kind", default), ref_.get("name")


def bounds(autoscaler: Object) -> tuple[int, int]:
    """(minimum, maximum) replicas, with each kind's API defaults."""
    spec = autoscaler["spec"]
    if autoscaler["kind"] == "ScaledObject":
        return int(spec.get("minReplicaCount", 0)), int(spec.get("maxReplicaCount", 100))
    return int(spec.get("minReplicas", 1)), int(spec["maxReplicas"])


def autoscalers(objects: list[Object]) -> list[Object]:
    return [o for o in objects if o.get("kind") in AUTOSCALERS]


def scales(objects: list[Object]) -> list[Scale]:
    owners = {target(o): o for o in autoscalers(objects)}
    found = []
    for workload in (o for o in objects if o.get("kind") in SCALABLE):
        owner = owners.get((workload["kind"], workload["metadata"]["name"]))
        if owner is None:
            replicas = int(workload["spec"].get("replicas", 1))
            found.append(Scale(workload, replicas, replicas, None))
        else:
            found.append(Scale(workload, *bounds(owner), owner))
    return found


def _budgets(objects: list[Object], workload: Object) -> list[Object]:
    labels = pod_template_labels(workload)
    return [
        o for o in objects if o.get("kind") == "PodDisruptionBudget" and _selects(o["spec"].get("selector"), labels)
    ]


def pdb_required(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    for scale in scales(objects):
        if scale.maximum > 1 and not _budgets(objects, scale.workload):
            yield (
                scale.workload,
                f"{ref(scale.workload)} runs up to {scale.maximum} replicas but no PodDisruptionBudget selects its "
                "pods (spec.template.metadata.labels); fix: add a PDB with maxUnavailable: 1 selecting them",
            )


def _percent(value: str) -> float:
    return float(value.rstrip("%")) / 100


def _allowed_disruptions(budget: Object, replicas: int) -> int:
    """Pods the budget lets go at `replicas` healthy pods (Kubernetes rounds percentages up)."""
    spec = budget["spec"]
    if "maxUnavailable" in spec:
        value = spec["maxUnavailable"]
        return -int(-_percent(value) * replicas // 1) if isinstance(value, str) else int(value)
    value = spec.get("minAvailable", 1)
    needed = -int(-_percent(value) * replicas // 1) if isinstance(value, str) else int(value)
    return replicas - needed


def pdb_consistent(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    by_labels = scales(objects)
    for budget in (o for o in objects if o.get("kind") == "PodDisruptionBudget"):
        covered = [s for s in by_labels if _selects(budget["spec"].get("selector"), pod_template_labels(s.workload))]
        if not covered:
            yield (
                budget,
                f"{ref(budget)}: spec.selector matches the pods of no Deployment or StatefulSet in the stack; "
                "fix: select the labels of the workload it protects, or remove it",
            )
        others = [
            ref(o)
            for o in objects
            if o.get("kind") in WORKLOAD_KINDS
            and o.get("kind") not in SCALABLE
            and _selects(budget["spec"].get("selector"), pod_template_labels(o))
        ]
        if others and not isinstance(budget["spec"].get("minAvailable"), int):
            yield (
                budget,
                f"{ref(budget)}: spec.selector also matches the pods of {', '.join(others)}, which have no scale "
                "to count maxUnavailable or a percentage against, so the budget cannot be computed and allows no "
                "evictions; "
                "fix: narrow the selector (add app.kubernetes.io/component) to the workload it protects",
            )
        for scale in covered:
            allowed = _allowed_disruptions(budget, scale.minimum)
            if allowed < 1:
                bound = f"the minimum of {ref(scale.autoscaler)}" if scale.autoscaler else "spec.replicas"
                yield (
                    budget,
                    f"{ref(budget)} allows {max(allowed, 0)} disruptions of {ref(scale.workload)} at {scale.minimum} "
                    f"replicas ({bound}), so it blocks every drain; fix: use maxUnavailable: 1, or a minAvailable "
                    f"below {scale.minimum}",
                )


def hpa_target(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    for hpa in autoscalers(objects):
        kind, name = target(hpa)
        workload = next((o for o in objects if o.get("kind") == kind and o["metadata"]["name"] == name), None)
        if workload is None:
            yield (
                hpa,
                f"{ref(hpa)}: spec.scaleTargetRef {kind}/{name} is not in the stack; "
                "fix: point it at the workload it scales",
            )
        elif set_by_deployer(workload, "spec", "replicas"):
            yield (
                workload,
                f"{ref(workload)}: spec.replicas is set ({workload['spec']['replicas']}) although {ref(hpa)} owns "
                "the replica count, so every deploy resets the autoscaler's choice; fix: leave spec.replicas unset",
            )


def _spreads(workload: Object) -> bool:
    labels = pod_template_labels(workload)
    pod = workload["spec"]["template"]["spec"]
    constraints = pod.get("topologySpreadConstraints") or []
    anti = (pod.get("affinity") or {}).get("podAntiAffinity") or {}
    terms = [
        *(anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []),
        *(t.get("podAffinityTerm", {}) for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []),
    ]
    return any(_selects(c.get("labelSelector"), labels) for c in [*constraints, *terms])


def topology_spread(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    for scale in scales(objects):
        if scale.maximum > 1 and not _spreads(scale.workload):
            yield (
                scale.workload,
                f"{ref(scale.workload)} runs up to {scale.maximum} replicas with no topologySpreadConstraints or "
                "podAntiAffinity selecting its own pods (spec.template.spec); fix: spread them across nodes and "
                "zones (components.pods.spread)",
            )
