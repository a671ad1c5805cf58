"""What a rule is, what it reports, and the pod-walking helpers the rules share.

A rule is a plain function over Kubernetes objects (dicts, as the builders return them). Object
rules see one object at a time (`ResourceValidationPolicy` under Pulumi); stack rules see every
object of a stack and its phase (`StackValidationPolicy`). Both yield `Finding`s: the object at
fault and a message naming the field and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

Level = Literal["mandatory", "advisory"]
Object = dict[str, Any]
Finding = tuple[Object, str]
ObjectCheck = Callable[[Object], Iterator[str]]
StackCheck = Callable[[list[Object], "int | None"], Iterator[Finding]]

EXCEPTION_PREFIX = "scaleladder.io/policy-exception."
"""`scaleladder.io/policy-exception.<rule-id>: "<why>"` on an object exempts it from that rule."""

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")
RUN_TO_COMPLETION = ("Job", "CronJob")


@dataclass(frozen=True)
class Rule:
    """A policy: `id` (also the Pulumi policy name), enforcement `level`, and exactly one check."""

    id: str
    level: Level
    description: str
    object_check: ObjectCheck | None = None
    stack_check: StackCheck | None = None

    def findings(self, objects: list[Object], phase: int | None) -> Iterator[Finding]:
        if self.object_check is not None:
            for obj in objects:
                yield from ((obj, message) for message in self.object_check(obj))
        if self.stack_check is not None:
            yield from self.stack_check(objects, phase)


@dataclass(frozen=True)
class Violation:
    rule: str
    level: Level
    target: str
    message: str

    def __str__(self) -> str:
        return f"[{self.level}] {self.rule}: {self.message}"


def ref(obj: Object) -> str:
    """`Deployment/web`: how messages name an object."""
    return f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"


def set_by_deployer(obj: Object, *path: str) -> bool:
    """Whether the field at `path` is set by whoever deploys the object, not by a controller.

    A rendered object says only what the kit sets. A live one — what the engine hands the stack
    rules for a deployed resource — also holds what the API server and controllers wrote (an HPA's
    `spec.replicas`); its managedFields tell them apart: only a server-side Apply counts.
    """
    node: Any = obj
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    managed = (obj.get("metadata") or {}).get("managedFields")
    if not managed:
        return True
    for entry in managed:
        fields: Any = entry.get("fieldsV1") if entry.get("operation") == "Apply" else None
        for key in path:
            fields = fields.get(f"f:{key}") if isinstance(fields, dict) else None
        if fields is not None:
            return True
    return False


def annotations_of(obj: Object) -> dict[str, str]:
    found: dict[str, str] = obj.get("metadata", {}).get("annotations") or {}
    return found


def pod_spec(obj: Object) -> tuple[str, Object] | None:
    """(path, pod spec) of a workload's pods; None for anything that runs no pods."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return "spec", spec
    if kind == "CronJob":
        return "spec.jobTemplate.spec.template.spec", spec.get("jobTemplate", {}).get("spec", {}).get(
            "template", {}
        ).get("spec", {})
    if kind in WORKLOAD_KINDS:
        return "spec.template.spec", spec.get("template", {}).get("spec", {})
    return None


def pod_template_labels(obj: Object) -> dict[str, str]:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    labels: dict[str, str] = spec.get("template", {}).get("metadata", {}).get("labels") or {}
    return labels


@dataclass(frozen=True)
class Container:
    path: str
    """Where it is: `spec.template.spec.containers[0]`."""
    spec: Object
    role: Literal["container", "init", "sidecar"]

    @property
    def name(self) -> str:
        return str(self.spec.get("name", "?"))

    def field(self, name: str) -> str:
        return f"{self.path}.{name}"


def containers(obj: Object) -> list[Container]:
    """Every container of a workload's pods: init containers, native sidecars, main containers."""
    found = pod_spec(obj)
    if found is None:
        return []
    path, pod = found
    listed = []
    for index, spec in enumerate(pod.get("initContainers") or []):
        role: Literal["init", "sidecar"] = "sidecar" if spec.get("restartPolicy") == "Always" else "init"
        listed.append(Container(f"{path}.initContainers[{index}]", spec, role))
    for index, spec in enumerate(pod.get("containers") or []):
        listed.append(Container(f"{path}.containers[{index}]", spec, "container"))
    return listed


def long_running(obj: Object) -> list[Container]:
    """Containers expected to keep serving (probed): not init containers, not run-to-completion pods."""
    if obj.get("kind") in RUN_TO_COMPLETION:
        return [c for c in containers(obj) if c.role == "sidecar"]
    return [c for c in containers(obj) if c.role != "init"]
