"""Pulumi's view of a resource back into the plain Kubernetes object the kit built.

Under `pulumi preview --policy-pack`, a policy sees a resource type (`kubernetes:apps/v1:Deployment`)
and its inputs (camelCase keys, as the kit passed them). Values not known until deployment
(generated passwords) are replaced by a marker instead of aborting the check; the stack's phase
comes from its stack file, found by the stack name in the URN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pulumi_policy.proxy import UnknownValueError

from components import config

UNKNOWN = "<unknown during preview>"
NOT_OBJECTS = {"helm.sh", "yaml", "kustomize"}
"""Provider types that are not one Kubernetes object (Helm releases, YAML groups)."""
STACKS = Path(__file__).resolve().parent.parent / "stacks"


def api_version(resource_type: str) -> tuple[str, str] | None:
    """`kubernetes:apps/v1:Deployment` -> (`apps/v1`, `Deployment`); `core/v1` -> `v1`; None if not an object."""
    parts = resource_type.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes" or "/" not in parts[1]:
        return None
    group, version = parts[1].rsplit("/", 1)
    if group in NOT_OBJECTS:
        return None
    return (version if group == "core" else f"{group}/{version}"), parts[2]


def plain(value: Any) -> Any:
    """A deep copy of policy props as dicts and lists, unknown values as `UNKNOWN`."""
    if isinstance(value, Mapping):
        return {key: _known(lambda k=key: value[k]) for key in value}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_known(lambda i=index: value[i]) for index in range(len(value))]
    return value


def _known(get: Any) -> Any:
    try:
        return plain(get())
    except UnknownValueError:
        return UNKNOWN


def to_object(resource_type: str, props: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Kubernetes object a resource stands for; None for components, providers, Helm releases."""
    kind = api_version(resource_type)
    if kind is None:
        return None
    return {**plain(props), "apiVersion": kind[0], "kind": kind[1]}


def phase_from_urn(urn: str, stacks_dir: Path = STACKS) -> int | None:
    """`urn:pulumi:phase3::scaleladder::...` -> the phase in stacks/Pulumi.phase3.yaml (None: no such
    file, or the cluster layer)."""
    stack = urn.split(":")[2] if urn.count(":") >= 2 else ""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not stack or not path.exists():
        return None
    loaded = config.from_stack_file(path)
    return loaded.phase if loaded.layer == "phase" else None
