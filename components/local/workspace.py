"""Pulumi's per-machine files, kept out of the repository: a local state backend and stack files.

`pulumi stack init` writes an `encryptionsalt` into the stack's config file, and `pulumi config
set` writes values there: both would dirty the checked-in stacks/Pulumi.<stack>.yaml. So the flow
keeps a small project folder under SCALELADDER_HOME (default ~/.scaleladder) whose stack files
are generated: the checked-in config, plus the kubeconfig context and the kit's images of this run,
plus the salt Pulumi wrote there earlier. `pulumi up --config-file` reads them; the program still
runs from the repository.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.local.image import BUILDS, Build
from components.settings import merge

DEV_PASSPHRASE = "scaleladder-local-development"  # local-only: it guards a dev state on this machine


@dataclass(frozen=True)
class Workspace:
    """Where the local flow keeps Pulumi state and the generated stack files."""

    home: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Workspace:
        return cls(Path(env.get("SCALELADDER_HOME") or Path.home() / ".scaleladder"))

    @property
    def backend_url(self) -> str:
        """A local (DIY) backend: no Pulumi account needed."""
        return f"file://{self.home / 'state'}"

    @property
    def project(self) -> Path:
        """Folder with a Pulumi.yaml naming the same project, and the generated stack files."""
        return self.home / "project"

    def stack_file(self, stack: str) -> Path:
        return self.project / f"Pulumi.{stack}.yaml"


def pulumi_env(workspace: Workspace, env: Mapping[str, str]) -> dict[str, str]:
    """The backend and a development passphrase, unless the caller's environment sets its own."""
    chosen = {"PULUMI_BACKEND_URL": env.get("PULUMI_BACKEND_URL") or workspace.backend_url}
    if not env.get("PULUMI_CONFIG_PASSPHRASE") and not env.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        chosen["PULUMI_CONFIG_PASSPHRASE"] = DEV_PASSPHRASE
    chosen["PULUMI_SKIP_UPDATE_CHECK"] = "true"
    return chosen


def stack_document(
    checked_in: Mapping[str, Any],
    previous: Mapping[str, Any],
    context: str,
    images: Sequence[str] = (),
    crds: Sequence[str] = (),
) -> dict[str, Any]:
    """The generated stack file: checked-in config + context + the kit's images, each in its setting
    (+ CRD folders that replace the cluster layer's Helm releases), keeping the salt Pulumi wrote."""
    config = dict(checked_in.get("config") or {})
    config["kubernetes:context"] = context
    for ref in images:
        build = image_build(ref)
        top, *inner = build.setting
        config[f"scaleladder:{top}"] = merge(config.get(f"scaleladder:{top}") or {}, nested(inner, ref))
    if crds:
        config["scaleladder:cluster"] = {
            **(config.get("scaleladder:cluster") or {}),
            "addons": "crds",
            "crds": list(crds),
        }
    config.update(climbed(checked_in, previous))
    document: dict[str, Any] = {}
    if "encryptionsalt" in previous:
        document["encryptionsalt"] = previous["encryptionsalt"]
    document["config"] = config
    return document


def climbed(checked_in: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, Any]:
    """The rung `scaleladder-local climb` took the stack to, if above the checked-in one: rewriting
    the file must never take a stack down a rung (its data lives in the upper rung's tiers)."""
    before = previous.get("config") or {}
    kept = {key: before[key] for key in ("scaleladder:phase", "scaleladder:climb") if key in before}
    if not kept:
        return {}
    higher = _phase(before) > _phase(checked_in.get("config") or {})
    return kept if higher or "scaleladder:climb" in kept else {}


def _phase(config: Mapping[str, Any]) -> int:
    return int(str(config.get("scaleladder:phase", 1)).strip('"'))


def image_build(ref: str) -> Build:
    """The build an image name comes from, by its repository; ValueError naming the known ones."""
    for build in BUILDS:
        if ref.startswith(f"{build.repository}:"):
            return build
    known = ", ".join(f"{build.repository}:<tag>" for build in BUILDS)
    raise ValueError(f"--image {ref!r}: not one of the kit's images ({known})")


def nested(keys: Sequence[str], value: Any) -> Any:
    """`{"a": {"b": value}}` for keys ("a", "b")."""
    for key in reversed(keys):
        value = {key: value}
    return value


def write(
    workspace: Workspace, root: Path, stack: str, context: str, images: Sequence[str] = (), crds: Sequence[str] = ()
) -> Path:
    """Write the project folder and the stack's generated file; returns the file's path."""
    source = root / "stacks" / f"Pulumi.{stack}.yaml"
    if not source.exists():
        known = sorted(path.name for path in (root / "stacks").glob("Pulumi.*.yaml"))
        raise ValueError(f"stack {stack!r}: no {source}; stack files: {', '.join(known) or 'none'}")
    (workspace.home / "state").mkdir(parents=True, exist_ok=True)
    workspace.project.mkdir(parents=True, exist_ok=True)
    project = {
        "name": yaml.safe_load((root / "Pulumi.yaml").read_text())["name"],
        "runtime": "python",
        "description": f"Generated by scaleladder-local: per-machine stack files; the program runs from {root}",
    }
    (workspace.project / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    target = workspace.stack_file(stack)
    previous = yaml.safe_load(target.read_text()) if target.exists() else {}
    document = stack_document(yaml.safe_load(source.read_text()) or {}, previous or {}, context, images, crds)
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target
