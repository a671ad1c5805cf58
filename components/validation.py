"""Strict schema validation of rendered objects against the Kubernetes versions the kit targets.

Strict means no field the API does not know: a typo such as `readinesProbe` fails here instead of
being silently dropped by the API server. The schemas are the ones `kubernetes-validate` ships;
each (version, kind) validator is built once, so validating every stack stays fast. Kinds from
CRDs (Gateway API, KEDA) have no built-in schema: `custom_kinds` lists them, and the policy rules
check them instead.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from importlib.resources import files
from typing import Any

import jsonschema
import referencing

TARGET_VERSION = "1.34.0"
"""The Kubernetes version of the kind node image the kit deploys to (kindest/node v1.34)."""

SUPPORTED_VERSIONS = ("1.33.0", "1.34.0", "1.35.0")
"""Every object must be valid on each of these: the target, the one before and the one after."""

_SCHEMAS = files("kubernetes_validate") / "kubernetes-json-schema"


def _schema_file(obj: dict[str, Any], version: str) -> Any:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    return _SCHEMAS / f"v{version}-local-strict" / f"{obj['kind'].lower()}-{group_version}.json"


@functools.cache
def _validator(version: str, schema_name: str) -> jsonschema.protocols.Validator | None:
    schema_file = _SCHEMAS / f"v{version}-local-strict" / schema_name
    if not schema_file.is_file():
        return None
    schema = json.loads(schema_file.read_text())
    registry: referencing.Registry[Any] = referencing.Registry()
    registry = _definitions(version) @ (referencing.Resource.from_contents(schema) @ registry)
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def _definitions(version: str) -> referencing.Resource[Any]:
    text = (_SCHEMAS / f"v{version}-local-strict" / "_definitions.json").read_text()
    return referencing.Resource.from_contents(json.loads(text))


def problems(objects: Iterable[dict[str, Any]], versions: Iterable[str] = SUPPORTED_VERSIONS) -> list[str]:
    """One line per schema violation: `Kind/name (1.34.0): spec.template...: reason`."""
    found = []
    for obj in objects:
        for version in versions:
            validator = _validator(version, _schema_file(obj, version).name)
            if validator is None:
                continue
            for error in validator.iter_errors(obj):
                where = ".".join(str(part) for part in error.absolute_path) or "(object)"
                found.append(f"{obj['kind']}/{obj['metadata']['name']} ({version}): {where}: {error.message}")
    return found


def custom_kinds(objects: Iterable[dict[str, Any]]) -> list[str]:
    """`apiVersion/kind` of the objects no built-in schema covers (custom resources)."""
    return sorted(
        {
            f"{obj['apiVersion']}/{obj['kind']}"
            for obj in objects
            if _validator(TARGET_VERSION, _schema_file(obj, TARGET_VERSION).name) is None
        }
    )
