"""`pulumi destroy` of every stack, highest phase first, then the cluster layer: nothing of the kit is
left (no namespace, claim, volume or CRD of the kit's groups) and no finalizer hangs."""

from __future__ import annotations

import pytest

from components.local import plan
from tests.cluster.conftest import STACKS, SimulatedCluster

pytestmark = pytest.mark.cluster

KIT_CRD_GROUPS = ("gateway.networking.k8s.io", "gateway.networking.x-k8s.io", "gateway.envoyproxy.io", "keda.sh")


def test_destroy_highest_first_leaves_nothing(ladder: SimulatedCluster) -> None:
    for stack in [*reversed(STACKS), plan.CLUSTER_STACK]:
        ladder.run(plan.destroy_stack(ladder.ctx, stack), timing=f"{stack} destroy")
    namespaces = {ns["metadata"]["name"] for ns in ladder.kubectl_json("get", "namespaces")["items"]}
    assert not {ns for ns in namespaces if ns.startswith("scaleladder-")}
    assert not ladder.kubectl_json("get", "pvc", "--all-namespaces")["items"]
    # the provisioner deletes a released volume a moment after its claim
    ladder.run(
        [plan.Step("volumes deleted", plan.kubectl(ladder.ctx, "wait", "--for=delete", "pv", "--all", "--timeout=2m"))]
    )
    left = [crd["metadata"]["name"] for crd in ladder.kubectl_json("get", "crd")["items"]]
    assert not [name for name in left if name.split(".", 1)[1] in KIT_CRD_GROUPS]
