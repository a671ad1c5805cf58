"""The kubectl inspection guides (README.md's phase sections, docs/local.md "Looking inside, phase by
phase") run on the deployed ladder: every command that only reads the API server (`get`, `describe`)
exits 0 and finds something. The others need pod networking, metrics or a terminal (exec, logs,
port-forward, run, top, --watch) or change the cluster (delete, scale): on the simulated cluster no
pod runs (docs/local.md says why).
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from components.local import plan
from components.local.cli import ROOT
from tests.cluster.conftest import SimulatedCluster

pytestmark = pytest.mark.cluster

READS = {"get", "describe"}
PHASE_BULLET = re.compile(r"^- \*\*Phase (\d)")
INLINE_KUBECTL = re.compile(r"`(kubectl [^`]+)`")


def guide_lines() -> list[tuple[str, int | None]]:
    """(line, phase of the bullet it is in) of the README's shell blocks and docs/local.md's inspection section."""
    local = (ROOT / "docs" / "local.md").read_text()
    section = local[local.index("## Looking inside, phase by phase") : local.index("## Troubleshooting")]
    lines: list[tuple[str, int | None]] = []
    for text in ((ROOT / "README.md").read_text(), section):
        phase = None
        for line in text.replace("\\\n", "").splitlines():  # a shell line continued with a backslash
            bullet = PHASE_BULLET.match(line)
            if bullet:
                phase = int(bullet.group(1))
            elif not line.startswith("  "):
                phase = None
            lines.append((line, phase))
    return lines


def guide_commands() -> list[tuple[str, ...]]:
    """Every kubectl command of the guides, as argv, with the namespace its bullet implies."""
    commands = []
    for line, phase in guide_lines():
        found = [line] if line.startswith("kubectl ") else INLINE_KUBECTL.findall(line) if phase else []
        for command in found:
            argv = shlex.split(command, comments=True)
            if phase is not None and not {"-n", "-A", "--all-namespaces"} & set(argv):
                argv += ["-n", plan.namespace(plan.phase_stack(phase))]
            commands.append(tuple(argv))
    return commands


def reads_only(argv: tuple[str, ...]) -> bool:
    verb = next(arg for index, arg in enumerate(argv[1:], 1) if not arg.startswith("-") and argv[index - 1] != "-n")
    return verb in READS and not {"-w", "--watch"} & set(argv)


def without_context(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The guides name kind's context (or none); the test names the simulated cluster's."""
    kept = list(argv[1:])
    if "--context" in kept:
        at = kept.index("--context")
        del kept[at : at + 2]
    return tuple(kept)


def test_the_guides_have_commands_to_check() -> None:
    commands = guide_commands()
    assert len([argv for argv in commands if reads_only(argv)]) >= 15, commands


@pytest.mark.parametrize("argv", [argv for argv in guide_commands() if reads_only(argv)], ids=shlex.join)
def test_a_guide_command_finds_what_it_shows(ladder: SimulatedCluster, argv: tuple[str, ...]) -> None:
    done = subprocess.run(
        plan.kubectl(ladder.ctx, *without_context(argv)), env=ladder.env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), f"no output; stderr: {done.stderr}"
    assert "No resources found" not in done.stderr
