"""The cluster tier: stacks deployed by the real Pulumi engine and provider on the simulated cluster.

The control plane is real (etcd, kube-apiserver, controller-manager, scheduler, built by
`scaleladder-local toolchain`); nodes and pods are kwok's. The tests run in a home of their own
(SCALELADDER_HOME, KUBECONFIG): they never touch a simulated cluster or Pulumi state of yours.
Without a complete toolchain they skip, saying how to build it; in CI (CI=true) that is a failure.

Every module but the climb works on one deployment of the whole ladder (the session fixture
`ladder`), in the order of MODULES: first what only reads it, then the day-two changes, then the
destroy.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import cli
from components.config import merge
from components.local import image, plan, sim
from components.local.cli import ROOT
from components.local.plan import Step
from components.local.runner import Runner
from components.stack import Stack
from testsupport.control_plane import complete_toolchain

PHASES = tuple(range(1, 7))
STACKS = tuple(plan.phase_stack(phase) for phase in PHASES)
MODULES = (
    "test_climb.py",
    "test_ladder.py",
    "test_inspection_guide.py",
    "test_policy_failures.py",
    "test_day_two.py",
    "test_destroy.py",
)
"""The order the modules run in: the climbing stack comes and goes before the ladder is deployed (the
kwok nodes' capacity holds one ladder at a time), the day-two changes update the ladder's stacks,
the last module destroys them."""
RUNS_PROGRAM = {"up", "preview", "refresh", "destroy"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run this directory's modules in MODULES order, leaving every other test where it is."""
    here = [index for index, item in enumerate(items) if Path(item.path).parent == Path(__file__).parent]
    ordered = sorted((items[index] for index in here), key=lambda item: MODULES.index(Path(item.path).name))
    for index, item in zip(here, ordered, strict=True):
        items[index] = item


@dataclass
class SimulatedCluster:
    """A running simulated cluster with its cluster layer, and how to run steps and commands on it."""

    ctx: plan.Context
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, steps: Sequence[Step], timing: str | None = None) -> str:
        """Run steps as `scaleladder-local` would; returns their output; fails the test with it on error."""
        out = io.StringIO()
        started = time.monotonic()
        try:
            Runner(self.env, out).run(steps)
        except Exception as error:
            pytest.fail(f"{error}\n--- output ---\n{out.getvalue()[-6000:]}")
        if timing:
            self.timings[timing] = time.monotonic() - started
        return out.getvalue()

    def kubectl_json(self, *args: str) -> Any:
        """`kubectl ARGS -o json` on the simulated cluster, parsed."""
        done = subprocess.run(
            [*plan.kubectl(self.ctx, *args), "-o", "json"], env=self.env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return json.loads(done.stdout)

    def stack_file(self, stack: str) -> Path:
        """The generated stack file Pulumi deploys `stack` with."""
        return self.ctx.workspace.stack_file(stack)

    def pulumi_step(self, stack: str, *args: str, config: Path | None = None) -> Step:
        """`pulumi ARGS` on `stack`, unattended; a verb that runs the program gets the stack's generated
        file (or `config`)."""
        config_file = ("--config-file", str(config or self.stack_file(stack))) if args[0] in RUNS_PROGRAM else ()
        argv = (*self.ctx.pulumi, *args, "--stack", stack, *config_file, "--non-interactive")
        return Step(f"pulumi {' '.join(args)} {stack}", argv, env=self.ctx.pulumi_env, cwd=ROOT)

    def pulumi(self, stack: str, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run `pulumi ARGS` on `stack` and return how it ended, whatever that was."""
        step = self.pulumi_step(stack, *args, config=config)
        return subprocess.run(
            step.argv, env={**self.env, **step.env}, cwd=step.cwd, capture_output=True, text=True, check=False
        )

    def pulumi_json(self, stack: str, *args: str) -> Any:
        """The JSON that `pulumi ARGS --json` prints for `stack` (a preview's plan, a stack's outputs)."""
        done = self.pulumi(stack, *args, "--json")
        assert done.returncode == 0, f"pulumi {' '.join(args)} {stack}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return json.loads(done.stdout)

    def config_with(self, stack: str, settings: Mapping[str, Any]) -> str:
        """The stack's generated file with `settings` (`scaleladder:` values) merged in, as
        `pulumi config set` would leave it."""
        document = yaml.safe_load(self.stack_file(stack).read_text())
        for key, value in settings.items():
            entry = f"scaleladder:{key}"
            document["config"][entry] = merge(document["config"].get(entry) or {}, value)
        return yaml.safe_dump(document, sort_keys=False)

    def stack(self, stack: str) -> Stack:
        """What `scaleladder render` builds from the stack file Pulumi deployed."""
        return cli.load_stack(stack, self.ctx.workspace.project)


@pytest.fixture(scope="session")
def simulated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedCluster]:
    """The simulated cluster and its cluster layer, started once for the session and stopped after it."""
    home = tmp_path_factory.mktemp("sim-home")
    env = {**os.environ, "SCALELADDER_HOME": str(home), "KUBECONFIG": str(home / "kubeconfig")}
    tools = complete_toolchain(env)
    ctx, steps = sim.up(ROOT, env, tools, None)
    cluster = SimulatedCluster(ctx, tools.env(env))
    try:
        cluster.run(steps, timing="cluster and cluster layer up")
        yield cluster
    finally:
        Runner(cluster.env, io.StringIO()).run(sim.down(env))
        for name, seconds in cluster.timings.items():
            sys.stderr.write(f"[cluster tier] {name}: {seconds:.1f}s\n")


@pytest.fixture(scope="session")
def ladder(simulated_cluster: SimulatedCluster) -> SimulatedCluster:
    """Every phase stack deployed, lowest first, each waited for as `scaleladder-local sim up` waits."""
    for phase in PHASES:
        simulated_cluster.run(
            plan.phase_up(simulated_cluster.ctx, phase, list(image.image_refs(ROOT).values())),
            timing=f"phase{phase} up",
        )
    return simulated_cluster
