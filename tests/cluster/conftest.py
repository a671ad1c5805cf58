"""The cluster tier: stacks deployed by the real Pulumi engine and provider on the simulated cluster.

The control plane is real (etcd, kube-apiserver, controller-manager, scheduler, built by
`scaleladder-local toolchain`); nodes and pods are kwok's. The tests run in a home of their own
(SCALELADDER_HOME, KUBECONFIG): they never touch a simulated cluster or Pulumi state of yours.
Without a complete toolchain they skip, saying how to build it; in CI (CI=true) that is a failure.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from components.local import plan, sim, toolchain
from components.local.cli import ROOT
from components.local.plan import Step
from components.local.runner import Runner


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


def complete_toolchain(env: dict[str, str]) -> toolchain.Toolchain:
    tools = toolchain.Toolchain.load(env)
    out = io.StringIO()
    if toolchain.check(tools, env, out) != 0:
        message = f"the cluster tier needs the toolchain: `uv run scaleladder-local toolchain`\n{out.getvalue()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return tools


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
