"""The whole ladder on the simulated cluster, with the real Pulumi engine: every phase stack up beside
the others, checked with kubectl, giving the outputs the README promises, unchanged on a second
preview and passing the policy pack through the engine.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest

from components.local import plan, sim
from tests.cluster.conftest import STACKS, SimulatedCluster

pytestmark = pytest.mark.cluster


def resource(obj: dict[str, Any]) -> str:
    """kubectl's fully qualified resource for an object's kind: `deployment.apps`, `service`."""
    group = obj["apiVersion"].rpartition("/")[0]
    return f"{obj['kind'].lower()}.{group}" if group else obj["kind"].lower()


def differences(live: Any, kit: Any, path: str = "") -> list[str]:
    """Where `live` lacks what `kit` sets: every key the kit sets, with its value (the server may add
    defaults, never change or drop a value); lists element by element."""
    if isinstance(kit, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r}, the kit set {kit!r}"]
        return [
            found
            for key, value in kit.items()
            for found in (differences(live[key], value, f"{path}.{key}") if key in live else [f"{path}.{key}: missing"])
        ]
    if isinstance(kit, list):
        if not isinstance(live, list) or len(live) != len(kit):
            return [f"{path}: {live!r}, the kit set {kit!r}"]
        pairs = enumerate(zip(live, kit, strict=True))
        return [found for index, (item, wanted) in pairs for found in differences(item, wanted, f"{path}[{index}]")]
    return [] if live == kit else [f"{path}: {live!r}, the kit set {kit!r}"]


def kit_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """What the kit sets on an object: its body and its labels and annotations. A Secret's
    `stringData` is write-only (the server stores it in `data`) and holds generated values: the
    keys are compared, not the values."""
    body = {key: value for key, value in obj.items() if key not in ("apiVersion", "kind", "metadata", "stringData")}
    body["metadata"] = {key: obj["metadata"][key] for key in ("labels", "annotations") if key in obj["metadata"]}
    if "stringData" in obj:
        body["data"] = {key: ... for key in obj["stringData"]}
    return body


def on_the_server(cluster: SimulatedCluster, stack: str) -> list[str]:
    """Every object the stack renders, as the kit set it, on the API server: what is missing or differs."""
    wanted: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for obj in cluster.stack(stack).objects():
        wanted[resource(obj), obj["metadata"].get("namespace", "")].append(obj)
    found = []
    for (kind, namespace), objects in wanted.items():
        scope = ("-n", namespace) if namespace else ()
        live = {item["metadata"]["name"]: item for item in cluster.kubectl_json("get", kind, *scope)["items"]}
        for obj in objects:
            name = obj["metadata"]["name"]
            if name not in live:
                found.append(f"{kind}/{name}: missing")
                continue
            fields = kit_fields(obj)
            if "data" in fields and obj["kind"] == "Secret":
                fields["data"] = {key: live[name].get("data", {}).get(key, "missing") for key in fields["data"]}
            found += [f"{kind}/{name}{where}" for where in differences(live[name], fields)]
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_every_rendered_object_is_on_the_api_server_as_the_kit_set_it(ladder: SimulatedCluster, stack: str) -> None:
    assert on_the_server(ladder, stack) == []


@pytest.mark.parametrize("stack", [plan.CLUSTER_STACK, *STACKS])
def test_the_stack_outputs_are_what_the_readme_promises(ladder: SimulatedCluster, stack: str) -> None:
    outputs = ladder.pulumi_json(stack, "stack", "output")
    assert outputs == json.loads(json.dumps(ladder.stack(stack).outputs))
    if stack == "phase5":  # `pulumi stack output cdn --stack phase5 --json`: the cache rules for a hosted CDN
        assert outputs["cdn"]["rules"], outputs["cdn"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_workload_is_ready_and_every_pod_scheduled(ladder: SimulatedCluster, stack: str) -> None:
    namespace = plan.namespace(stack)
    labels = ladder.kubectl_json("get", "namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"  # the API server admitted every pod under it
    workloads = ladder.kubectl_json("get", "deployment.apps,statefulset.apps,job.batch", "-n", namespace)["items"]
    assert workloads
    assert sim.unready(workloads) == []
    pods = ladder.kubectl_json("get", "pods", "-n", namespace)["items"]
    assert pods
    for pod in pods:
        assert pod["spec"].get("nodeName"), f"{pod['metadata']['name']} is not scheduled"
        if pod["status"]["phase"] != "Succeeded":
            ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            assert ready.get("Ready") == "True", pod["metadata"]["name"]


def zones(cluster: SimulatedCluster) -> dict[str, str]:
    nodes = cluster.kubectl_json("get", "nodes")["items"]
    return {n["metadata"]["name"]: n["metadata"]["labels"].get("topology.kubernetes.io/zone", "") for n in nodes}


def placed(cluster: SimulatedCluster, namespace: str, selector: str) -> list[str]:
    pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return [pod["spec"]["nodeName"] for pod in pods]


@pytest.mark.parametrize("stack", ["phase4", "phase5", "phase6"])
def test_a_redis_master_and_its_replica_never_share_a_node(ladder: SimulatedCluster, stack: str) -> None:
    pods = ladder.kubectl_json("get", "pods", "-n", plan.namespace(stack), "-l", "app.kubernetes.io/name=redis")
    shards: dict[str, list[str]] = defaultdict(list)
    for pod in pods["items"]:
        shards[pod["metadata"]["labels"]["scaleladder.dev/redis-shard"]].append(pod["spec"]["nodeName"])
    assert len(shards) >= 3
    assert all(len(set(nodes)) == len(nodes) == 2 for nodes in shards.values()), shards
    # The first masters' spread over nodes is a preference (ScheduleAnyway, docs/redis-cluster.md):
    # with every phase sharing three workers the scheduler has put two of them on one node.


@pytest.mark.parametrize(
    ("stack", "selector"),
    [("phase3", "app.kubernetes.io/name=web"), ("phase3", "app.kubernetes.io/name=pgbouncer")],
)
def test_replicas_spread_over_zones(ladder: SimulatedCluster, stack: str, selector: str) -> None:
    nodes = placed(ladder, plan.namespace(stack), selector)
    zone_of = zones(ladder)
    assert len(nodes) >= 2
    assert len({zone_of[node] for node in nodes}) == min(len(nodes), 3), nodes


@pytest.mark.parametrize("stack", [plan.CLUSTER_STACK, *STACKS])
def test_a_second_preview_changes_nothing(ladder: SimulatedCluster, stack: str) -> None:
    ladder.run([ladder.pulumi_step(stack, "preview", "--expect-no-changes")], timing=f"{stack} no-op preview")


@pytest.mark.parametrize("stack", [plan.CLUSTER_STACK, *STACKS])
def test_the_policy_pack_passes_through_the_engine(ladder: SimulatedCluster, stack: str) -> None:
    output = ladder.run([ladder.pulumi_step(stack, "preview", "--policy-pack", "policies/analyzer")])
    assert "scaleladder@v0.0.1 (local: policies/analyzer)" in output
