"""Delete the CustomResourceDefinitions of given API groups: what `helm uninstall` leaves behind.

Helm never deletes CRDs it installed from a chart's crds/ folder, so after the cluster layer is
destroyed the Gateway API and Envoy Gateway CRDs (and KEDA's) would stay. This runs after every
custom resource is gone, so deleting the definitions deletes nothing anyone still uses.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any


def names_in_groups(crd_list: Mapping[str, Any], groups: Iterable[str]) -> list[str]:
    """Names of the CRDs in `kubectl get crd -o json` whose spec.group is one of `groups`, sorted."""
    wanted = set(groups)
    return sorted(item["metadata"]["name"] for item in crd_list.get("items", []) if item["spec"]["group"] in wanted)


def delete(context: str, groups: list[str], env: Mapping[str, str]) -> int:
    """List the cluster's CRDs, delete those in `groups`; returns kubectl's exit code."""
    listing = subprocess.run(
        ["kubectl", "--context", context, "get", "crd", "-o", "json"],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if listing.returncode != 0:
        print(listing.stderr.strip())
        return listing.returncode
    try:
        names = names_in_groups(json.loads(listing.stdout), groups)
    except (ValueError, KeyError, TypeError) as error:
        print(f"`kubectl get crd -o json` did not return a CRD list ({error!r}): {listing.stdout[:200]!r}")
        return 1
    if not names:
        print(f"no CRDs left in groups {', '.join(groups)}")
        return 0
    print(f"deleting {len(names)} CRDs: {', '.join(names)}")
    command = ["kubectl", "--context", context, "delete", "crd", *names, "--wait", "--timeout=5m"]
    return subprocess.run(command, env=dict(env), check=False).returncode
