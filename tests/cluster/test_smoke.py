"""Smoke: the cluster layer and phase 1 go up with the real engine, stay put on a second preview, and go away."""

from __future__ import annotations

import json
import subprocess

import pytest

from components.local import image, plan
from components.local.cli import ROOT
from tests.cluster.conftest import SimulatedCluster

pytestmark = pytest.mark.cluster

KIT_CRD_GROUPS = ("gateway.networking.k8s.io", "gateway.envoyproxy.io", "keda.sh")


def kubectl_json(cluster: SimulatedCluster, *args: str) -> dict:
    done = subprocess.run(
        [*plan.kubectl(cluster.ctx, *args), "-o", "json"], env=cluster.env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def preview_no_changes(cluster: SimulatedCluster, stack: str) -> plan.Step:
    config = str(cluster.ctx.workspace.stack_file(stack))
    argv = (*cluster.ctx.pulumi, "preview", "--stack", stack, "--config-file", config, "--expect-no-changes")
    return plan.Step(
        f"pulumi preview {stack}: no changes", (*argv, "--non-interactive"), env=cluster.ctx.pulumi_env, cwd=ROOT
    )


def test_phase1_up_noop_destroy(simulated_cluster: SimulatedCluster) -> None:
    cluster = simulated_cluster
    namespace = plan.namespace("phase1")
    crds = kubectl_json(cluster, "get", "crd")["items"]
    assert {"gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io"} <= {
        crd["metadata"]["name"] for crd in crds
    }
    gateway = kubectl_json(cluster, "get", "gateway", "edge", "-n", "scaleladder-gateway")
    assert gateway["spec"]["gatewayClassName"] == "scaleladder"

    cluster.run(plan.phase_up(cluster.ctx, 1, image.image_ref(ROOT)), timing="phase1 up")
    pods = kubectl_json(cluster, "get", "pods", "-n", namespace)["items"]
    assert pods and all(pod["status"]["phase"] == "Running" and pod["spec"].get("nodeName") for pod in pods)
    claims = kubectl_json(cluster, "get", "pvc", "-n", namespace)["items"]
    assert claims and all(claim["status"]["phase"] == "Bound" for claim in claims)

    cluster.run([preview_no_changes(cluster, plan.CLUSTER_STACK), preview_no_changes(cluster, "phase1")])

    cluster.run(plan.destroy_stack(cluster.ctx, "phase1"), timing="phase1 destroy")
    cluster.run(plan.destroy_stack(cluster.ctx, plan.CLUSTER_STACK), timing="cluster layer destroy")
    namespaces = {ns["metadata"]["name"] for ns in kubectl_json(cluster, "get", "namespaces")["items"]}
    assert not namespaces & {namespace, "scaleladder-gateway"}
    left = [crd["metadata"]["name"] for crd in kubectl_json(cluster, "get", "crd")["items"]]
    assert not [name for name in left if name.split(".", 1)[1] in KIT_CRD_GROUPS]
    assert not kubectl_json(cluster, "get", "pv")["items"]
