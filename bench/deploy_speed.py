"""Benchmark: Pulumi against plain kubectl on the simulated cluster, every figure from this one run.

    uv run python bench/deploy_speed.py [--phases 3 6]

Needs the toolchain (`uv run scaleladder-local toolchain`). Starts a simulated cluster of its own
(in a temporary home), deploys the cluster layer, then for each phase, one after the other on the
same cluster:

- Pulumi: `pulumi up` from empty (with the kit's waits), a no-op `pulumi preview`, `pulumi destroy`;
- kubectl, on the manifests `scaleladder render` writes for the same stack: `kubectl apply
  --server-side` plus waiting for the same readiness (Deployments Available, StatefulSets ready,
  Jobs complete), `kubectl diff --server-side`, `kubectl delete --wait`.

It prints each time and the Pulumi/kubectl ratio. The issue's targets: up within 2x of apply-and-wait,
a no-op preview of phase 6 within 3x of `kubectl diff --server-side`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from components.local import image, plan, sim, toolchain
from components.local.cli import ROOT
from components.local.runner import Runner

READY_TIMEOUT = 600.0


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(argv: tuple[str, ...], env: Mapping[str, str], ok: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(argv, env=dict(env), cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def ready(ctx: plan.Context, env: Mapping[str, str], namespace: str) -> bool:
    """The readiness the kit's waits give (components.local.sim.unready), once there are workloads."""
    listing = json.loads(
        run(plan.kubectl(ctx, "get", "deployment,statefulset,job", "-n", namespace, "-o", "json"), env)
    )
    return bool(listing["items"]) and not sim.unready(listing["items"])


def wait_ready(ctx: plan.Context, env: Mapping[str, str], namespace: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready(ctx, env, namespace):
        if time.monotonic() > deadline:
            raise SystemExit(f"{namespace} not ready after {READY_TIMEOUT:.0f}s")
        time.sleep(0.5)


def measure(ctx: plan.Context, env: dict[str, str], phase: int, manifests: Path) -> dict[str, float]:
    stack = plan.phase_stack(phase)
    namespace = plan.namespace(stack)
    runner = Runner(env, io.StringIO())
    config = str(ctx.workspace.stack_file(stack))
    preview = (*ctx.pulumi, "preview", "--stack", stack, "--config-file", config, "--expect-no-changes")
    figures = {
        "pulumi up": timed(lambda: runner.run(plan.phase_up(ctx, phase, list(image.image_refs(ROOT).values())))),
        "pulumi preview (no-op)": timed(lambda: run((*preview, "--non-interactive"), {**env, **ctx.pulumi_env})),
        "pulumi destroy": timed(lambda: runner.run(plan.destroy_stack(ctx, stack))),
    }
    files = ("-f", str(manifests))
    figures["kubectl apply + wait"] = timed(
        lambda: (run(plan.kubectl(ctx, "apply", "--server-side", *files), env), wait_ready(ctx, env, namespace))
    )
    # exit 1 means "differences": timed all the same, the figure is what the comparison costs
    figures["kubectl diff (no-op)"] = timed(
        lambda: run(plan.kubectl(ctx, "diff", "--server-side", *files), env, (0, 1))
    )
    figures["kubectl delete"] = timed(lambda: run(plan.kubectl(ctx, "delete", "--wait", *files), env))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", type=int, nargs="+", default=[3, 6])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scaleladder-bench-") as home:
        env = {**os.environ, "SCALELADDER_HOME": home, "KUBECONFIG": f"{home}/kubeconfig"}
        tools = toolchain.Toolchain.load(env)
        if toolchain.check(tools, env, io.StringIO()) != 0:
            print("the toolchain is incomplete: uv run scaleladder-local toolchain", file=sys.stderr)
            return 2
        tools_env = tools.env(env)
        ctx, steps = sim.up(ROOT, env, tools, None)
        try:
            Runner(tools_env, io.StringIO()).run(steps)
            print("| phase | step | Pulumi s | kubectl s | ratio |\n|---|---|---|---|---|")
            for phase in args.phases:
                manifests = Path(home) / f"manifests-{phase}"
                run(
                    (sys.executable, "-m", "components", "render", plan.phase_stack(phase), "--out", str(manifests)),
                    env,
                )
                f = measure(ctx, tools_env, phase, manifests)
                for pulumi, kubectl in (
                    ("pulumi up", "kubectl apply + wait"),
                    ("pulumi preview (no-op)", "kubectl diff (no-op)"),
                    ("pulumi destroy", "kubectl delete"),
                ):
                    step = f"{pulumi} / {kubectl}"
                    print(f"| {phase} | {step} | {f[pulumi]:.1f} | {f[kubectl]:.1f} | {f[pulumi] / f[kubectl]:.1f}x |")
        finally:
            Runner(tools_env, io.StringIO()).run(sim.down(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
