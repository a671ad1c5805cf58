"""The policy pack stops a preview through the engine: a deployed stack given a broken configuration
(one the config model accepts, since it rejects the obvious mistakes itself) fails `pulumi preview
--policy-pack` with the messages of the rules it breaks, word for word as `scaleladder check` gives them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.check import check
from tests.cluster.conftest import SimulatedCluster
from testsupport.day_two import phase_stack

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


@pytest.mark.parametrize("case", BROKEN, ids=str)
def test_a_broken_configuration_fails_the_preview_with_the_rules_message(
    ladder: SimulatedCluster, case: str, tmp_path: Path
) -> None:
    phase, settings, rules = BROKEN[case]
    stack = f"phase{phase}"
    offline = check(phase_stack(phase, settings))
    assert {violation.rule for violation in offline} == rules, offline
    config = tmp_path / f"Pulumi.{stack}.yaml"  # a copy: the deployed stack keeps its file
    config.write_text(ladder.config_with(stack, settings))

    done = ladder.pulumi(stack, "preview", "--policy-pack", "policies/analyzer", config=config)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    for violation in offline:
        assert f"[mandatory]  {violation.rule}" in output, output[-3000:]
        assert violation.message in output, f"{violation.rule}: {violation.message}\n{output[-3000:]}"
