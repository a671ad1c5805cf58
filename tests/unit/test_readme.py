"""The README stays true: its topology diagrams are what `scaleladder diagram` draws today."""

from __future__ import annotations

from components import cli, diagram


def draw(stack: str) -> str:
    return diagram.flowchart(cli.load_stack(stack).objects())


def test_readme_shows_diagrams() -> None:
    stacks = [m.group(2) for m in diagram.MARKDOWN_BLOCK.finditer(cli.README.read_text())]
    assert stacks == ["phase1", "phase2", "phase3", "phase4", "phase5", "phase6"]


def test_readme_diagrams_are_current() -> None:
    text = cli.README.read_text()
    assert text == diagram.refresh_markdown(text, draw), (
        "README.md's diagrams are stale: run `uv run scaleladder readme-diagrams` and review the diff"
    )


def test_refresh_replaces_only_the_marked_blocks() -> None:
    text = "intro\n<!-- diagram: a -->\n```mermaid\nold\n```\n```mermaid\nuntouched\n```\n"
    assert diagram.refresh_markdown(text, lambda stack: f"new {stack}\n") == (
        "intro\n<!-- diagram: a -->\n```mermaid\nnew a\n```\n```mermaid\nuntouched\n```\n"
    )
