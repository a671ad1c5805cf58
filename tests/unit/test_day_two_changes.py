"""Day-two changes touch only what they must: checked on rendered objects, before any deployer runs.

Kubernetes refuses changes to some fields (a Job's pod template, a StatefulSet's claim templates and
selector); a deployer can only replace such an object, and replacing a StatefulSet stops every pod
of a database at once. So a setting change must never alter those fields under the same name. The
cluster tier applies the same CHANGES with `pulumi up` (tests/cluster/test_day_two.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from components.config import from_values
from components.settings import ConfigError
from testsupport.day_two import CHANGES, DayTwoChange, rendered_changes, rendered_objects

IMMUTABLE = {
    "Job": ("template", "selector"),
    "StatefulSet": ("selector", "serviceName", "volumeClaimTemplates", "podManagementPolicy"),
    "Deployment": ("selector",),
}


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.name)
def test_a_day_two_change_touches_exactly_its_objects(change: DayTwoChange) -> None:
    before = rendered_objects(change.phase, {})
    assert rendered_changes(before, rendered_objects(change.phase, change.settings)) == change.expected


def nudged(spec: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every number and switch of a config, each with a neighbouring value (within its bounds)."""
    for setting in dataclasses.fields(spec):
        value = getattr(spec, setting.name)
        key = (*path, setting.name)
        if dataclasses.is_dataclass(value):
            yield from nudged(value, key)
        elif isinstance(value, bool):
            yield key, not value
        elif isinstance(value, int) and key != ("phase",):
            maximum = setting.metadata.get("maximum")
            yield key, value - 1 if maximum is not None and value + 1 > maximum else value + 1


def nested(key: tuple[str, ...], value: Any) -> dict[str, Any]:
    return {key[0]: nested(key[1:], value)} if len(key) > 1 else {key[0]: value}


@pytest.mark.parametrize("phase", range(1, 7))
def test_no_number_or_switch_changes_a_field_kubernetes_will_not_update(phase: int) -> None:
    before = rendered_objects(phase, {})
    checked = 0
    for key, value in nudged(from_values({"phase": phase})):
        try:
            after = rendered_objects(phase, nested(key, value))
        except ConfigError:
            continue  # the neighbour is not allowed with this phase's other values
        checked += 1
        for name in before.keys() & after.keys():
            for immutable in IMMUTABLE.get(before[name]["kind"], ()):
                assert before[name]["spec"].get(immutable) == after[name]["spec"].get(immutable), (
                    f"{'.'.join(key)} -> {value!r} changes {name} spec.{immutable}, which only a replace can change"
                )
    assert checked > 20
