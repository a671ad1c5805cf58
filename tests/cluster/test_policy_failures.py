"""The policy pack stops a preview through the engine: a deployed stack given a broken configuration
(one the config model accepts, since it rejects the obvious mistakes itself) fails `pulumi preview
--policy-pack` with the messages of the rules it breaks, word for word as `scaleladder check` gives them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import from_values, merge
from components.stack import Secrets, build
from policies.check import check
from tests.cluster.conftest import SimulatedCluster

pytestmark = pytest.mark.cluster

BROKEN = {
    "a secret as an env literal": (3, {"web": {"env": {"API_TOKEN": "hunter2hunter2"}}}, {"secret-env-literal"}),
    "phase 3 without autoscaling": (
        3,
        {"web": {"autoscaling": {"enabled": False}, "replicas": 3}},
        {"phase-autoscaled-web", "pdb-required"},
    ),
    "phase 4 with a standalone Redis": (4, {"redis": {"mode": "standalone"}}, {"phase-redis-cluster"}),
}


def broken_file(cluster: SimulatedCluster, stack: str, settings: dict[str, Any], folder: Path) -> Path:
    """A copy of the stack's generated file with `settings` merged in; the deployed stack is untouched."""
    document = yaml.safe_load(cluster.stack_file(stack).read_text())
    for key, value in settings.items():
        document["config"][f"scaleladder:{key}"] = merge(document["config"].get(f"scaleladder:{key}") or {}, value)
    path = folder / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.mark.parametrize("case", BROKEN, ids=str)
def test_a_broken_configuration_fails_the_preview_with_the_rules_message(
    ladder: SimulatedCluster, case: str, tmp_path: Path
) -> None:
    phase, settings, rules = BROKEN[case]
    stack = f"phase{phase}"
    offline = check(build(stack, from_values(merge({"phase": phase}, settings)), Secrets.development()))
    assert {violation.rule for violation in offline} == rules, offline
    config = broken_file(ladder, stack, settings, tmp_path)

    done = ladder.pulumi(stack, "preview", "--policy-pack", "policies/analyzer", config=config)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    for violation in offline:
        assert f"[mandatory]  {violation.rule}" in output, output[-3000:]
        assert violation.message in output, f"{violation.rule}: {violation.message}\n{output[-3000:]}"
