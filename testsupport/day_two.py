"""Typical day-two changes to a running stack, and exactly which of its objects each one touches.

The unit tier checks them on rendered objects (`rendered_changes`); the cluster tier applies them
with `pulumi up` and holds the engine's own plan to the same sets. Objects are named `Kind/name`,
with a Job's spec digest shown as `*` (`Job/web-migrate-*`, `NetworkPolicy/web-migrate-*-egress`):
a Job that must run again comes back under a new name, so it is created and its old self deleted.
No change here replaces anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from components.config import from_values, merge
from components.stack import Secrets, Stack, build

WAYS = ("egress", "ingress")
JOB_DIGEST = re.compile(r"-[0-9a-f]{8}(?=-|$)")


@dataclass(frozen=True)
class Changes:
    """What a change does to a stack's objects, as sets of `Kind/name`."""

    updated: frozenset[str] = frozenset()
    created: frozenset[str] = frozenset()
    deleted: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DayTwoChange:
    """`settings` (the `scaleladder:` values) merged into a phase stack's config, and what they change."""

    name: str
    phase: int
    settings: Mapping[str, Any]
    expected: Changes

    @property
    def stack(self) -> str:
        return f"phase{self.phase}"


def changes(updated: Iterable[str] = (), *, created: Iterable[str] = (), rerun: Iterable[str] = ()) -> Changes:
    """`rerun` Jobs (`web-migrate`) are created under a new name, with their egress policy, and the old deleted."""
    jobs = {name for job in rerun for name in (f"Job/{job}-*", f"NetworkPolicy/{job}-*-egress")}
    return Changes(frozenset(updated), frozenset(created) | jobs, frozenset(jobs))


CHANGES = (
    DayTwoChange(
        "new web image",
        3,
        {"web": {"image": "scaleladder/sample:day-two-1"}},
        changes(["Deployment/web"], rerun=["web-migrate"]),
    ),
    DayTwoChange("one more read replica", 3, {"postgres": {"replicas": 3}}, changes(["StatefulSet/postgres"])),
    DayTwoChange(
        "HPA bound", 3, {"web": {"autoscaling": {"max_replicas": 6}}}, changes(["HorizontalPodAutoscaler/web"])
    ),
    DayTwoChange(
        "PgBouncer setting",
        3,
        {"postgres": {"pooler": {"max_client_conn": 500}}},
        changes(["ConfigMap/pgbouncer-config", "Deployment/pgbouncer"]),
    ),
    DayTwoChange(
        "one more Redis master",
        4,
        {"redis": {"masters": 4}},
        changes(
            [
                "ConfigMap/redis-config",
                *(f"NetworkPolicy/redis-shard-{shard}-{way}" for shard in range(3) for way in WAYS),
                "NetworkPolicy/web-egress",
            ],
            created=["StatefulSet/redis-shard-3", *(f"NetworkPolicy/redis-shard-3-{way}" for way in WAYS)],
            rerun=["redis-bootstrap"],
        ),
    ),
)


def object_name(obj: Mapping[str, Any]) -> str:
    """`Kind/name`, a Job's spec digest replaced by `*`."""
    return f"{obj['kind']}/{JOB_DIGEST.sub('-*', obj['metadata']['name'])}"


def phase_stack(phase: int, settings: Mapping[str, Any]) -> Stack:
    """Stack `phase<phase>` with `settings` (the `scaleladder:` values), built as `scaleladder render` builds it."""
    return build(f"phase{phase}", from_values(merge({"phase": phase}, dict(settings))), Secrets.development())


def rendered_objects(phase: int, settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The objects of `phase_stack(phase, settings)`, by `Kind/name`."""
    return {f"{obj['kind']}/{obj['metadata']['name']}": obj for obj in phase_stack(phase, settings).objects()}


def rendered_changes(before: Mapping[str, dict[str, Any]], after: Mapping[str, dict[str, Any]]) -> Changes:
    """The objects `after` changes, adds and drops compared with `before` (both by exact `Kind/name`)."""

    both = {**before, **after}

    def named(keys: Iterable[str]) -> frozenset[str]:
        return frozenset(object_name(both[key]) for key in keys)

    return Changes(
        named(key for key in before.keys() & after.keys() if before[key] != after[key]),
        named(after.keys() - before.keys()),
        named(before.keys() - after.keys()),
    )
