"""Stacks as files: every object of a stack written as YAML, for kubectl, diffs and golden tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from components.stack import Stack


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (scripts, configs), insertion order for keys, no anchors."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream; keys in the builders' order (apiVersion, kind, metadata, spec)."""
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, explicit_start=True, width=120)


def files(stack: Stack) -> dict[str, str]:
    """Relative path -> YAML: `00-namespace.yaml`, then one file per part in deployment order.

    Helm releases (cluster layer) go to `helm/<release>.yaml`, out of the way of
    `kubectl apply -f DIR`, which does not descend into folders.
    """
    rendered = {"00-namespace.yaml": to_yaml([stack.namespace])}
    for index, part in enumerate(stack.parts, start=1):
        rendered[f"{index:02d}-{part.name}.yaml"] = to_yaml(part.objects)
    for release in stack.releases:
        rendered[f"helm/{release.name}.yaml"] = to_yaml([release.describe()])
    return rendered


def write(stack: Stack, out: Path) -> list[Path]:
    """Write the stack's files into `out` (created; stale .yaml files from earlier renders removed)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.yaml"), *out.glob("helm/*.yaml")]:
        stale.unlink()
    written = []
    for name, text in files(stack).items():
        path = out / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
