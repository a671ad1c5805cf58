"""One stack climbed from phase 1 to 6 in place, by `scaleladder-local climb` and the real engine.

Each stage's plan is held to what its rung may do: nothing replaced; nothing that holds data
deleted, except by the contract stage that retires the old tier, after its data was copied. On the
API server, every claim, Secret and StatefulSet of the stack keeps its identity across the stage
unless the stage retired it, and every copy Job completed (the engine waits for it). kwok plays the
pods, so the copies themselves are proved elsewhere, against real servers on loopback
(services/sample/tests/test_sample_climb_*.py, tests/integration/test_climb_postgres_in_place.py).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
import yaml

from components.climb import RUNGS
from components.local import cli, climb, image, plan, workspace
from components.local.cli import ROOT
from tests.cluster.conftest import SimulatedCluster
from tests.cluster.test_day_two import data_holders

pytestmark = pytest.mark.cluster

STACK = "climber"
NAMESPACE = plan.namespace(STACK)
COPY_JOBS = {1: "Job/climb-copy-database-", 3: "Job/climb-move-sessions-", 4: "Job/climb-adopt-shards-"}
FINISH_JOBS = {3: "Job/climb-move-sessions-final-", 4: "Job/climb-adopt-shards-finish-"}


@pytest.fixture(scope="module")
def climber(simulated_cluster: SimulatedCluster) -> Iterator[SimulatedCluster]:
    """Stack `climber` on phase 1 (the checked-in phase-1 settings, its own namespace); destroyed after."""
    ctx = simulated_cluster.ctx
    checked_in = yaml.safe_load((ROOT / "stacks" / "Pulumi.phase1.yaml").read_text())
    document = workspace.stack_document(checked_in, {}, ctx.context, list(image.image_refs(ROOT).values()))
    ctx.workspace.stack_file(STACK).write_text(yaml.safe_dump(document, sort_keys=False))
    simulated_cluster.run(plan.deploy_stack(ctx, STACK)[1:], timing="climber phase 1 up")
    yield simulated_cluster
    simulated_cluster.run(
        [
            simulated_cluster.pulumi_step(STACK, "destroy", "--yes", "--skip-preview"),
            simulated_cluster.pulumi_step(STACK, "stack", "rm", "--yes", "--force"),
        ],
        timing="climber destroy",
    )


def kinds(names: frozenset[str], kind: str) -> set[str]:
    return {name for name in names if name.startswith(f"{kind}/")}


def test_one_stack_climbs_from_phase_1_to_6_without_replacing_or_losing_anything(climber: SimulatedCluster) -> None:
    for to in range(2, 7):
        lower = to - 1
        before = data_holders(climber, NAMESPACE)
        if to == 6:  # one rung through the command itself, as a user runs it
            assert cli.main(["climb", "--sim", "--stack", STACK, "--to", "6"], env=climber.env) == 0
            assert data_holders(climber, NAMESPACE).keys() >= before.keys()
            continue
        started = time.monotonic()
        done = climb.climb(climber.ctx, climber.env, STACK, to, io.StringIO())
        climber.timings[f"climber {lower} -> {to}, {len(done)} stages"] = time.monotonic() - started
        after = data_holders(climber, NAMESPACE)
        assert climb.position(yaml.safe_load(climber.stack_file(STACK).read_text())["config"]) == climb.Position(to)
        assert [stage.climb["stage"] for stage, _ in done] == list(RUNGS[lower].stages)
        for stage, applied in done:
            where = f"{stage.description}: "
            assert applied.replaced == frozenset(), where + str(sorted(applied.replaced))
            holders = {name for name in applied.deleted if name.partition("/")[0] in climb.DATA_HOLDERS}
            assert holders == stage.retires, where + str(sorted(holders))
        retired = set().union(*(stage.retires for stage, _ in done))
        for name, (uid, _) in before.items():
            if name not in retired:
                assert name in after and after[name][0] == uid, f"{lower} -> {to}: {name} was deleted or replaced"
        assert not retired & set(after), f"{lower} -> {to}: {sorted(retired & set(after))} still there"
        if lower in COPY_JOBS:
            expand, switch, _ = (applied for _, applied in done)
            [job] = [name for name in expand.created if name.startswith(COPY_JOBS[lower])]
            assert job in switch.deleted  # completed (the engine waited for it) before the switch
            if lower in FINISH_JOBS:
                assert [name for name in switch.created if name.startswith(FINISH_JOBS[lower])]
            # the service moves at the switch, never while the copy runs
            assert "Deployment/web" not in expand.updated | expand.created
            assert "Deployment/web" in switch.updated
        if lower == 2:  # postgres-0 alone under Patroni first, then the replicas join
            expand, contract = (applied for _, applied in done)
            assert "StatefulSet/postgres" in expand.updated and "StatefulSet/postgres" in contract.updated
            assert "Deployment/web" not in expand.updated
    outputs = climber.pulumi_json(STACK, "stack", "output")
    assert (outputs["phase"], "climb" in outputs) == (6, False)
    with pytest.raises(climb.Refused, match="going down a rung is refused"):
        climb.climb(climber.ctx, climber.env, STACK, 5, io.StringIO())
