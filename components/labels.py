"""The `app.kubernetes.io/*` labels every object carries, and the stable subset selectors use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PART_OF = "scaleladder"
MANAGED_BY = "pulumi"


@dataclass(frozen=True)
class Meta:
    """Where a stack's objects live and how they are labelled.

    `instance` is the stack name (phase1, phase3, ...); `version` is the kit's version and is
    left out of selectors, which must not change when the kit is upgraded.
    """

    namespace: str
    instance: str
    version: str

    def selector(self, name: str) -> dict[str, str]:
        """Labels a Service or workload selects on: stable across upgrades."""
        return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": self.instance}

    def labels(self, name: str, component: str) -> dict[str, str]:
        """Every recommended label: the selector plus component, part-of, version, managed-by."""
        return {
            **self.selector(name),
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/version": self.version,
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }

    def metadata(self, name: str, component: str, *, object_name: str | None = None) -> dict[str, Any]:
        """`metadata` of a namespaced object named `object_name` (default: `name`)."""
        return {
            "name": object_name or name,
            "namespace": self.namespace,
            "labels": self.labels(name, component),
        }
