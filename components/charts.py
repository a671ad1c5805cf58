"""What the cluster layer installs with Helm: one file per chart in `charts/`, pinned, per flavour.

A chart file names the release, its namespace, the chart (a repository chart or an `oci://`
reference), an exact version, and values per cluster flavour (`default`, `kind`); the flavour's
values are merged over `default`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.settings import merge

CHARTS = Path(__file__).resolve().parent.parent / "charts"
EXACT_VERSION = re.compile(r"v?\d+\.\d+\.\d+")
REQUIRED = ("release", "namespace", "chart", "version", "values")


@dataclass(frozen=True)
class HelmRelease:
    """One Helm release of the cluster layer, with the values of the chosen flavour."""

    name: str
    namespace: str
    chart: str
    repository: str
    version: str
    values: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """The release as data: what `render` writes and what `helm upgrade --install` would take."""
        return {
            "release": self.name,
            "namespace": self.namespace,
            "chart": self.chart,
            "repository": self.repository,
            "version": self.version,
            "values": self.values,
        }


def load(name: str, flavour: str, folder: Path = CHARTS) -> HelmRelease:
    """The release described by `charts/<name>.yaml`, for `flavour`; ValueError lists what is wrong."""
    path = folder / f"{name}.yaml"
    document = yaml.safe_load(path.read_text()) or {}
    problems = [f"`{key}` is required" for key in REQUIRED if key not in document]
    if not problems:
        if not EXACT_VERSION.fullmatch(str(document["version"])):
            problems.append(f"version must be exact (x.y.z), got {document['version']!r}")
        repository = document.get("repository", "")
        if bool(repository) == str(document["chart"]).startswith("oci://"):
            problems.append("needs a `repository` for a named chart, and none for an oci:// chart")
        if flavour not in document["values"]:
            problems.append(f"has no values for flavour {flavour!r}; flavours: {', '.join(document['values'])}")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    values = document["values"]
    return HelmRelease(
        name=document["release"],
        namespace=document["namespace"],
        chart=document["chart"],
        repository=repository,
        version=str(document["version"]),
        values=merge(values.get("default") or {}, values[flavour] or {}),
    )
