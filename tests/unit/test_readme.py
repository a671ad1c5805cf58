"""The README stays true: its topology diagrams are what `scaleladder diagram` draws today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components import cli, diagram

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- diagram: (\S+) -->\n```mermaid\n(.*?)```", re.DOTALL)


def readme_diagrams() -> dict[str, str]:
    return dict(BLOCK.findall(README.read_text()))


def test_readme_shows_diagrams() -> None:
    assert readme_diagrams()


@pytest.mark.parametrize("stack", sorted(readme_diagrams()))
def test_readme_diagram_is_current(stack: str) -> None:
    drawn = diagram.mermaid(cli.load_stack(stack).objects(), stack).split("---\n", 2)[2]
    assert readme_diagrams()[stack] == drawn, (
        f"README.md's diagram of {stack} is stale; replace it with `uv run scaleladder diagram {stack}` "
        "(without the title lines)"
    )
