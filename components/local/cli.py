"""`scaleladder-local`: check the tools, then bring a phase up on a local kind cluster, or down.

scaleladder-local check                  which tools are missing, with install hints
scaleladder-local up --phase 3           cluster, cluster layer, image, phase 3; then where to browse
scaleladder-local down [--keep-cluster]  every stack, add-ons and CRDs, namespaces, the cluster
scaleladder-local plan up --phase 3      print the commands `up` would run, run nothing
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from components.local import cluster_config, crds, guide, image, plan, prerequisites, workspace
from components.local.runner import Runner, StepFailed

ROOT = Path(__file__).resolve().parent.parent.parent
PHASES = range(1, 7)
GATEWAY_NODE_PORT = 30080  # the cluster layer's Gateway NodePort (cluster.node_port)


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


def require_dockerfile(root: Path) -> None:
    dockerfile = root / image.CONTEXT / "Dockerfile"
    if not dockerfile.exists():
        raise ValueError(f"no {dockerfile}: the sample image cannot be built")


def steps_for(args: argparse.Namespace, root: Path, env: Mapping[str, str]) -> tuple[plan.Context, list[plan.Step]]:
    ctx = context(root, env)
    if args.action == "up":
        require_stack(root, args.phase)
        return ctx, plan.up(ctx, args.phase, image.image_ref(root))
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
    prepare.add_argument("--image", help="web image of this run")
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
            print(workspace.write(space, root, args.stack, args.context, args.image))
            return 0
        if args.command == "delete-crds":
            return crds.delete(args.context, args.group, env)
        ctx, steps = steps_for(args, root, env)
        if args.command == "up":
            require_dockerfile(root)
    except ValueError as error:
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
