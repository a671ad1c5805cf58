"""`scaleladder-local`: check the tools, then bring a phase up on a local kind cluster, or down.

scaleladder-local check                  which tools are missing, with install hints
scaleladder-local up --phase 3           cluster, cluster layer, image, phase 3; then where to browse
scaleladder-local down [--keep-cluster]  every stack, add-ons and CRDs, namespaces, the cluster
scaleladder-local plan up --phase 3      print the commands `up` would run, run nothing
scaleladder-local climb --stack phase1 --to 2   move a running stack up one rung with its data
scaleladder-local toolchain [--check]    build (or check) the offline engine and control plane from Go modules
scaleladder-local sim up [--phase N]     the simulated cluster (no Docker), its cluster layer, phase N
scaleladder-local sim down               stop the simulated cluster, forget its stacks
scaleladder-local pulumi ARGS...         the toolchain's pulumi, on the simulated cluster's state
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from components.local import (
    climb,
    cluster_config,
    crds,
    engine,
    guide,
    image,
    plan,
    prerequisites,
    sim,
    toolchain,
    workspace,
)
from components.local.runner import Runner, StepFailed

ROOT = Path(__file__).resolve().parent.parent.parent
PHASES = range(1, 7)
GATEWAY_NODE_PORT = cluster_config.GATEWAY_NODE_PORT


def context(root: Path, env: Mapping[str, str]) -> plan.Context:
    """Resolve the cluster file, the workspace and Pulumi's environment for planning."""
    space = workspace.Workspace.from_env(env)
    return plan.Context(
        root=root,
        cluster=cluster_config.load(GATEWAY_NODE_PORT, root / "local" / "kind-cluster.yaml"),
        workspace=space,
        pulumi_env=workspace.pulumi_env(space, env),
        python=sys.executable,
    )


def phase_stacks(root: Path) -> list[str]:
    """Phase stacks that have a checked-in stack file: phase1, phase2, ..."""
    return sorted(path.name[len("Pulumi.") : -len(".yaml")] for path in (root / "stacks").glob("Pulumi.phase*.yaml"))


def require_stack(root: Path, phase: int) -> None:
    stack = plan.phase_stack(phase)
    if stack not in phase_stacks(root):
        known = ", ".join(phase_stacks(root)) or "none"
        raise ValueError(f"--phase {phase}: there is no stacks/Pulumi.{stack}.yaml yet; phase stacks: {known}")


def require_dockerfiles(root: Path) -> None:
    for build in image.BUILDS:
        dockerfile = root / build.context / "Dockerfile"
        if not dockerfile.exists():
            raise ValueError(f"no {dockerfile}: the image {build.repository} cannot be built")


def steps_for(args: argparse.Namespace, root: Path, env: Mapping[str, str]) -> tuple[plan.Context, list[plan.Step]]:
    ctx = context(root, env)
    if args.action == "up":
        require_stack(root, args.phase)
        return ctx, plan.up(ctx, args.phase, list(image.image_refs(root).values()))
    return ctx, plan.down(ctx, phase_stacks(root), args.keep_cluster)


def show(steps: Sequence[plan.Step]) -> str:
    """A plan as a numbered list of shell commands."""
    lines = []
    for number, step in enumerate(steps, 1):
        lines.append(f"# {number}. {step.description}")
        for probe in step.only_if:
            lines.append(f"#    only if: {shlex.join(probe)}")
        if step.skip_if:
            lines.append(f"#    skipped if: {shlex.join(step.skip_if)}")
        env = " ".join(f"{key}={shlex.quote(value)}" for key, value in sorted(step.env.items()))
        cwd = f"(cd {shlex.quote(str(step.cwd))} && " if step.cwd else ""
        command = shlex.join(step.argv)
        lines.append(f"{cwd}{env + ' ' if env else ''}{command}{')' if cwd else ''}")
    return "\n".join(lines)


def check(env: Mapping[str, str]) -> bool:
    """Print every tool's finding; True when nothing blocks the flow."""
    findings = prerequisites.check(env)
    for finding in findings:
        print(finding)
    blocking = prerequisites.missing(findings)
    if blocking:
        print(f"missing: {', '.join(blocking)} (see the hints above; docs/local.md lists versions)")
    return not blocking


def run_sim(args: argparse.Namespace, root: Path, env: dict[str, str]) -> int:
    """`sim up` / `sim down`: needs a complete toolchain; runs its steps with the toolchain first on PATH."""
    tools = toolchain.Toolchain.load(env)
    tools_env = tools.env(env)
    if args.sim_action == "down":
        steps = sim.down(env)
    else:
        if toolchain.check(tools, env, sys.stdout) != 0:
            return 2
        if args.phase is not None:
            require_stack(root, args.phase)
        _, steps = sim.up(root, env, tools, args.phase)
    try:
        Runner(tools_env, sys.stdout).run(steps)
    except StepFailed as failure:
        print(f"scaleladder-local sim {args.sim_action}: {failure}", file=sys.stderr)
        return 1
    if args.sim_action == "up":
        print(sim.after_up(args.phase))
    return 0


def run_climb(args: argparse.Namespace, root: Path, env: dict[str, str]) -> int:
    """`climb`: on kind (the pulumi CLI) or, with --sim, on the simulated cluster."""
    if args.sim:
        tools = toolchain.Toolchain.load(env)
        ctx, run_env = sim.context(root, env, tools), tools.env(env)
    else:
        ctx, run_env = context(root, env), env
    try:
        climb.climb(ctx, run_env, args.stack, args.to, sys.stdout)
    except climb.Refused as refused:
        print(f"scaleladder-local climb: {refused}", file=sys.stderr)
        return 2
    except climb.StageFailed as failed:
        print(
            f"scaleladder-local climb: {failed}\nThe old tier still serves. Fix the cause and run the same command "
            "again to resume (docs/climbing.md)",
            file=sys.stderr,
        )
        return 1
    print(f"stack {args.stack} is at phase {args.to}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="scaleladder-local", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--root", type=Path, help="the repository (default: the one this module is in)")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="check docker, kind, kubectl and pulumi")
    for name, help_text, target in (
        ("up", "create or reuse the cluster and deploy a phase", commands),
        ("down", "tear every stack and the cluster down, in order", commands),
    ):
        command = target.add_parser(name, help=help_text)
        add_action_options(command, name)
    plan_cmd = commands.add_parser("plan", help="print the commands of `up` or `down` without running them")
    actions = plan_cmd.add_subparsers(dest="action", required=True)
    for name in ("up", "down"):
        add_action_options(actions.add_parser(name), name)
    prepare = commands.add_parser("workspace", help="(a step of up/down) write a stack's generated config file")
    prepare.add_argument("stack")
    prepare.add_argument("--context", required=True, help="kubeconfig context Pulumi must deploy to")
    prepare.add_argument(
        "--image", action="append", default=[], help="an image of this run (the web or the Postgres image); repeatable"
    )
    prepare.add_argument(
        "--crds", action="append", default=[], metavar="DIR", help="install only the CRDs in DIR, not the add-ons"
    )
    tools = commands.add_parser("toolchain", help="build the offline toolchain from Go modules (local/toolchain.yaml)")
    tools.add_argument("--check", action="store_true", help="only check every binary's version; exit 1 if any is off")
    tools.add_argument("--only", action="append", default=[], metavar="FAMILY", help="build only this family")
    simulated = commands.add_parser("sim", help="the simulated cluster: real control plane, kwok nodes, no Docker")
    sim_actions = simulated.add_subparsers(dest="sim_action", required=True)
    sim_up = sim_actions.add_parser("up", help="start it (or reuse it), deploy the cluster layer and a phase")
    sim_up.add_argument("--phase", type=int, choices=PHASES, help="also deploy this rung of the ladder")
    sim_actions.add_parser("down", help="stop every process of it and forget its stacks")
    climbing = commands.add_parser("climb", help="move a running stack up one rung, its data copied and verified")
    climbing.add_argument("--stack", required=True, help="a stack deployed by `up` or `sim up` (phase1, ...)")
    climbing.add_argument(
        "--to", type=int, required=True, help="the rung above the stack's (or the one it is climbing to)"
    )
    climbing.add_argument("--sim", action="store_true", help="a stack of the simulated cluster (`sim up`)")
    run_pulumi = commands.add_parser(
        "pulumi", help="the toolchain's pulumi, on the simulated cluster's state, with the program served in-process"
    )
    run_pulumi.add_argument("args", nargs=argparse.REMAINDER, help="pulumi's own arguments")
    delete = commands.add_parser("delete-crds", help="(a step of down) delete the CRDs of API groups")
    delete.add_argument("--context", required=True)
    delete.add_argument("--group", action="append", required=True)
    return top


def add_action_options(command: argparse.ArgumentParser, action: str) -> None:
    command.set_defaults(action=action)
    if action == "up":
        command.add_argument("--phase", type=int, choices=PHASES, default=3, help="rung of the ladder (default 3)")
    else:
        command.add_argument("--keep-cluster", action="store_true", help="tear the stacks down, keep the cluster")


def main(argv: list[str] | None = None, root: Path = ROOT, env: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    root = args.root or root
    env = dict(os.environ if env is None else env)
    try:
        if args.command == "check":
            return 0 if check(env) else 2
        if args.command == "workspace":
            space = workspace.Workspace.from_env(env)
            print(workspace.write(space, root, args.stack, args.context, args.image, args.crds))
            return 0
        if args.command == "delete-crds":
            return crds.delete(args.context, args.group, env)
        if args.command == "toolchain":
            tools = toolchain.Toolchain.load(env)
            if args.check:
                return toolchain.check(tools, env, sys.stdout)
            return toolchain.build(tools, env, sys.stdout, args.only)
        if args.command == "sim":
            return run_sim(args, root, env)
        if args.command == "climb":
            return run_climb(args, root, env)
        if args.command == "pulumi":
            return engine.run(args.args, root, sim.pulumi_env(env, toolchain.Toolchain.load(env)))
        ctx, steps = steps_for(args, root, env)
        if args.command == "up":
            require_dockerfiles(root)
    except (ValueError, toolchain.ToolchainError) as error:
        print(f"scaleladder-local: {error}", file=sys.stderr)
        return 2
    if args.command == "plan":
        print(show(steps))
        return 0
    if not check(env):
        return 2
    try:
        Runner(env, sys.stdout).run(steps)
    except StepFailed as failure:
        print(f"scaleladder-local {args.command}: {failure}", file=sys.stderr)
        print("see docs/local.md#troubleshooting", file=sys.stderr)
        return 1
    if args.command == "up":
        print(guide.after_up(ctx.cluster, args.phase))
    return 0
