"""Lists the API server merges by key hold each key once, in every object of every stack.

Server-side apply (Pulumi's default) rejects an object whose list-map has two entries with the
same key (`duplicate entries for key [...]`), which neither the schema check nor a client-side
dry run notices: two hostname spread constraints in the Redis shards once stopped phase 4.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from components import cli

Key = Callable[[dict[str, Any]], tuple[Any, ...]]

POD_LISTS: dict[str, Key] = {
    "containers": lambda c: (c["name"],),
    "initContainers": lambda c: (c["name"],),
    "volumes": lambda v: (v["name"],),
    "topologySpreadConstraints": lambda c: (c["topologyKey"], c["whenUnsatisfiable"]),
    "imagePullSecrets": lambda s: (s["name"],),
}
CONTAINER_LISTS: dict[str, Key] = {
    "ports": lambda p: (p["containerPort"], p.get("protocol", "TCP")),
    "env": lambda e: (e["name"],),
    "volumeMounts": lambda m: (m["mountPath"],),
}


def pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = obj.get("spec") or {}
    if obj["kind"] == "Pod":
        yield spec
    elif obj["kind"] == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]
    elif "template" in spec and obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        yield spec["template"]["spec"]


def duplicates(items: list[dict[str, Any]], key: Key) -> list[tuple[Any, ...]]:
    keys = [key(item) for item in items]
    return sorted({k for k in keys if keys.count(k) > 1}, key=repr)


def problems(obj: dict[str, Any]) -> Iterator[str]:
    where = f"{obj['kind']} {obj['metadata']['name']}"
    if obj["kind"] == "Service":
        ports = obj["spec"].get("ports", [])
        for found in duplicates(ports, lambda p: (p["port"], p.get("protocol", "TCP"))):
            yield f"{where}: spec.ports twice {found}"
    for pod in pod_specs(obj):
        for field, key in POD_LISTS.items():
            for found in duplicates(pod.get(field, []), key):
                yield f"{where}: {field} twice {found}"
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for field, key in CONTAINER_LISTS.items():
                for found in duplicates(container.get(field, []), key):
                    yield f"{where}: container {container['name']} {field} twice {found}"


@pytest.mark.parametrize("stack", cli.stack_names(cli.STACKS))
def test_list_map_keys_are_unique(stack: str) -> None:
    found = [problem for obj in cli.load_stack(stack).objects() for problem in problems(obj)]
    assert found == []


def test_a_duplicate_key_is_found() -> None:
    spread = {"topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
    pod = {"containers": [{"name": "a"}], "topologySpreadConstraints": [spread, {**spread, "maxSkew": 2}]}
    obj = {"kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"template": {"spec": pod}}}
    assert list(problems(obj)) == [
        "StatefulSet s: topologySpreadConstraints twice ('kubernetes.io/hostname', 'ScheduleAnyway')"
    ]
