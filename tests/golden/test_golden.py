"""Golden manifests: every stack's rendered files, checked in, and compared byte for byte.

A builder change shows up here as a diff to review. When the change is intended, regenerate:
    uv run scaleladder render STACK --out tests/golden/STACK
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from components import cli, render, web
from components.stack import Stack

GOLDEN = Path(__file__).parent
STACKS = cli.stack_names(cli.STACKS)


def differences(stack: Stack, folder: Path) -> list[str]:
    """Unified diffs between the stack as rendered now and the files in `folder`."""
    rendered = render.files(stack)
    checked_in = {str(path.relative_to(folder)): path.read_text() for path in folder.rglob("*.yaml")}
    found = []
    for name in sorted(set(rendered) | set(checked_in)):
        diff = difflib.unified_diff(
            checked_in.get(name, "").splitlines(),
            rendered.get(name, "").splitlines(),
            f"golden/{name}",
            f"rendered/{name}",
            lineterm="",
        )
        found.extend(diff)
    return found


def test_every_stack_has_golden_files() -> None:
    assert sorted(path.name for path in GOLDEN.iterdir() if path.is_dir() and not path.name.startswith("_")) == STACKS


@pytest.mark.parametrize("name", STACKS)
def test_rendered_stack_matches_golden_files(name: str) -> None:
    diff = differences(cli.load_stack(name), GOLDEN / name)
    assert not diff, (
        f"stack {name} renders differently from tests/golden/{name}; if intended, run "
        f"`uv run scaleladder render {name} --out tests/golden/{name}` and review the diff:\n" + "\n".join(diff[:80])
    )


def test_a_changed_builder_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "SERVICE_PORT", 8081)
    diff = differences(cli.load_stack("phase2"), GOLDEN / "phase2")
    assert "-    port: 80" in diff and "+    port: 8081" in diff
