"""`scaleladder render|diagram|check STACK`: a stack's manifests, topology and policy check, without
Pulumi or a cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components import config, diagram, reference, render
from components.settings import ConfigError, Problem
from components.stack import Secrets, Stack, build

ROOT = Path(__file__).resolve().parent.parent
STACKS = ROOT / "stacks"
README = ROOT / "README.md"


def stack_names(stacks_dir: Path) -> list[str]:
    return sorted(path.name[len("Pulumi.") : -len(".yaml")] for path in stacks_dir.glob("Pulumi.*.yaml"))


def load_stack(name: str, stacks_dir: Path = STACKS) -> Stack:
    """Build a stack from its file with development stand-ins for generated secrets."""
    path = stacks_dir / f"Pulumi.{name}.yaml"
    if not path.exists():
        known = ", ".join(stack_names(stacks_dir)) or "none"
        raise ConfigError([Problem("stack", f"no stack {name!r} in {stacks_dir}; stacks: {known}")])
    return build(name, config.from_stack_file(path), Secrets.development())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scaleladder", description=__doc__)
    parser.add_argument("--stacks-dir", type=Path, default=STACKS, help="folder of Pulumi.<stack>.yaml files")
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser("render", help="write a stack's manifests as YAML files")
    render_cmd.add_argument("stack")
    render_cmd.add_argument("--out", type=Path, help="folder to write (default build/<stack>)")
    diagram_cmd = commands.add_parser("diagram", help="print a stack's topology as a Mermaid flowchart")
    diagram_cmd.add_argument("stack")
    check_cmd = commands.add_parser("check", help="run every policy rule and strict schema validation on a stack")
    check_cmd.add_argument("stack")
    commands.add_parser("config-reference", help="print every setting, its type, default and meaning")
    commands.add_parser("readme-diagrams", help="redraw the stack diagrams embedded in README.md")
    args = parser.parse_args(argv)
    if args.command == "config-reference":
        print(reference.markdown(config.StackConfig), end="")
        return 0
    if args.command == "readme-diagrams":
        README.write_text(
            diagram.refresh_markdown(
                README.read_text(), lambda name: diagram.flowchart(load_stack(name, args.stacks_dir).objects())
            )
        )
        print(f"redrew the diagrams in {README}")
        return 0
    try:
        stack = load_stack(args.stack, args.stacks_dir)
    except ConfigError as error:
        print(f"scaleladder: stack {args.stack}: {error}", file=sys.stderr)
        return 2
    if args.command == "check":
        from policies import check

        return check.report(stack)
    if args.command == "render":
        out = args.out or ROOT / "build" / args.stack
        written = render.write(stack, out)
        print(f"wrote {len(written)} files, {len(stack.objects())} objects to {out}")
    else:
        print(diagram.mermaid(stack.objects(), f"{args.stack} (phase {stack.config.phase})"), end="")
    return 0
