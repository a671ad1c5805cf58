"""The whole ladder on the simulated cluster, with the real Pulumi engine: every phase stack up beside
the others, checked with kubectl, unchanged on a second preview, passing the policy pack through the
engine, and destroyed highest first, leaving nothing behind.

The tests run in file order on one deployment (the module fixture); the last one destroys it.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from components import cli
from components.local import image, plan, sim
from components.local.cli import ROOT
from tests.cluster.conftest import SimulatedCluster

pytestmark = pytest.mark.cluster

PHASES = tuple(range(1, 7))
STACKS = tuple(plan.phase_stack(phase) for phase in PHASES)
KIT_CRD_GROUPS = ("gateway.networking.k8s.io", "gateway.networking.x-k8s.io", "gateway.envoyproxy.io", "keda.sh")


def kubectl_json(cluster: SimulatedCluster, *args: str) -> Any:
    done = subprocess.run(
        [*plan.kubectl(cluster.ctx, *args), "-o", "json"], env=cluster.env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return json.loads(done.stdout)


def pulumi_step(cluster: SimulatedCluster, stack: str, *args: str) -> plan.Step:
    config = str(cluster.ctx.workspace.stack_file(stack))
    argv = (*cluster.ctx.pulumi, *args, "--stack", stack, "--config-file", config, "--non-interactive")
    return plan.Step(f"pulumi {' '.join(args)} {stack}", argv, env=cluster.ctx.pulumi_env, cwd=ROOT)


@pytest.fixture(scope="module")
def ladder(simulated_cluster: SimulatedCluster) -> SimulatedCluster:
    """Every phase stack deployed, lowest first, each waited for as `scaleladder-local sim up` waits."""
    for phase in PHASES:
        simulated_cluster.run(
            plan.phase_up(simulated_cluster.ctx, phase, image.image_ref(ROOT)), timing=f"phase{phase} up"
        )
    return simulated_cluster


def resource(obj: dict[str, Any]) -> str:
    """kubectl's fully qualified resource for an object's kind: `deployment.apps`, `service`."""
    group = obj["apiVersion"].rpartition("/")[0]
    return f"{obj['kind'].lower()}.{group}" if group else obj["kind"].lower()


def rendered(cluster: SimulatedCluster, stack: str) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """What `scaleladder render` produces from the stack file Pulumi deployed, by (resource, namespace), then name."""
    found: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for obj in cli.load_stack(stack, cluster.ctx.workspace.project).objects():
        found[resource(obj), obj["metadata"].get("namespace", "")][obj["metadata"]["name"]] = obj
    return found


def pod_templates(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        yield obj["spec"]["template"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_rendered_object_is_on_the_api_server_as_the_kit_set_it(ladder: SimulatedCluster, stack: str) -> None:
    for (kind, namespace), wanted in rendered(ladder, stack).items():
        scope = ("-n", namespace) if namespace else ()
        live = {item["metadata"]["name"]: item for item in kubectl_json(ladder, "get", kind, *scope)["items"]}
        assert set(wanted) <= set(live), f"{stack}: {kind} missing: {sorted(set(wanted) - set(live))}"
        for name, obj in wanted.items():
            labels = live[name]["metadata"].get("labels", {})
            assert obj["metadata"].get("labels", {}).items() <= labels.items(), f"{stack}: {kind}/{name} labels"
            for template, live_template in zip(pod_templates(obj), pod_templates(live[name]), strict=True):
                kit = [(c["name"], c["image"]) for c in template["spec"]["containers"]]
                server = [(c["name"], c["image"]) for c in live_template["spec"]["containers"]]
                assert kit == server, f"{stack}: {kind}/{name} containers"


@pytest.mark.parametrize("stack", STACKS)
def test_every_workload_is_ready_and_every_pod_scheduled(ladder: SimulatedCluster, stack: str) -> None:
    namespace = plan.namespace(stack)
    labels = kubectl_json(ladder, "get", "namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"  # the API server admitted every pod under it
    workloads = kubectl_json(ladder, "get", "deployment.apps,statefulset.apps,job.batch", "-n", namespace)["items"]
    assert workloads
    assert sim.unready(workloads) == []
    pods = kubectl_json(ladder, "get", "pods", "-n", namespace)["items"]
    assert pods
    for pod in pods:
        assert pod["spec"].get("nodeName"), f"{pod['metadata']['name']} is not scheduled"
        if pod["status"]["phase"] != "Succeeded":
            ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            assert ready.get("Ready") == "True", pod["metadata"]["name"]


def zones(cluster: SimulatedCluster) -> dict[str, str]:
    nodes = kubectl_json(cluster, "get", "nodes")["items"]
    return {n["metadata"]["name"]: n["metadata"]["labels"].get("topology.kubernetes.io/zone", "") for n in nodes}


def placed(cluster: SimulatedCluster, namespace: str, selector: str) -> list[str]:
    pods = kubectl_json(cluster, "get", "pods", "-n", namespace, "-l", selector)["items"]
    return [pod["spec"]["nodeName"] for pod in pods]


@pytest.mark.parametrize("stack", ["phase4", "phase5", "phase6"])
def test_a_redis_master_and_its_replica_never_share_a_node(ladder: SimulatedCluster, stack: str) -> None:
    pods = kubectl_json(ladder, "get", "pods", "-n", plan.namespace(stack), "-l", "app.kubernetes.io/name=redis")
    shards: dict[str, list[str]] = defaultdict(list)
    for pod in pods["items"]:
        shards[pod["metadata"]["labels"]["scaleladder.dev/redis-shard"]].append(pod["spec"]["nodeName"])
    assert len(shards) >= 3
    assert all(len(set(nodes)) == len(nodes) == 2 for nodes in shards.values()), shards
    masters = [pod["spec"]["nodeName"] for pod in pods["items"] if pod["metadata"]["name"].endswith("-0")]
    assert len(set(masters)) == len(masters), "the first masters share a node"


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
    ladder.run([pulumi_step(ladder, stack, "preview", "--expect-no-changes")], timing=f"{stack} no-op preview")


@pytest.mark.parametrize("stack", [plan.CLUSTER_STACK, *STACKS])
def test_the_policy_pack_passes_through_the_engine(ladder: SimulatedCluster, stack: str) -> None:
    output = ladder.run([pulumi_step(ladder, stack, "preview", "--policy-pack", "policies/analyzer")])
    assert "scaleladder@v0.0.1 (local: policies/analyzer)" in output


def test_destroy_highest_first_leaves_nothing(ladder: SimulatedCluster) -> None:
    for stack in [*reversed(STACKS), plan.CLUSTER_STACK]:
        ladder.run(plan.destroy_stack(ladder.ctx, stack), timing=f"{stack} destroy")
    namespaces = {ns["metadata"]["name"] for ns in kubectl_json(ladder, "get", "namespaces")["items"]}
    assert not {ns for ns in namespaces if ns.startswith("scaleladder-")}
    assert not kubectl_json(ladder, "get", "pvc", "--all-namespaces")["items"]
    # the provisioner deletes a released volume a moment after its claim
    ladder.run(
        [plan.Step("volumes deleted", plan.kubectl(ladder.ctx, "wait", "--for=delete", "pv", "--all", "--timeout=2m"))]
    )
    left = [crd["metadata"]["name"] for crd in kubectl_json(ladder, "get", "crd")["items"]]
    assert not [name for name in left if name.split(".", 1)[1] in KIT_CRD_GROUPS]
