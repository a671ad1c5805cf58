"""What makes it safe not to await Services: a part's Services select only its own workloads, whose
pods Pulumi awaits Ready before any part that depends on it starts."""

from __future__ import annotations

import pytest

from components import cli
from components.stack import SKIP_AWAIT
from components.topology import pod_labels, selects, workloads


@pytest.mark.parametrize("stack", [f"phase{phase}" for phase in range(1, 7)])
def test_every_service_selects_workloads_of_its_own_part_only(stack: str) -> None:
    parts = cli.load_stack(stack).parts
    checked = 0
    for part in parts:
        for service in (obj for obj in part.objects if obj["kind"] == "Service"):
            selector = service["spec"].get("selector") or {}
            owners = {p.name for p in parts for w in workloads(p.objects) if selects(selector, pod_labels(w))}
            assert owners == {part.name}, f"{stack}: Service/{service['metadata']['name']} in {part.name}: {owners}"
            assert SKIP_AWAIT.items() <= service["metadata"]["annotations"].items()
            checked += 1
    assert checked
