"""The cluster and its cluster layer: zoned nodes, the metrics API, the Gateway on the host port."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.local.cluster_config import ZONE_LABEL

pytestmark = pytest.mark.e2e


def test_one_control_plane_and_three_workers_in_three_zones(kit: Any) -> None:
    nodes = kit.json("get", "nodes")["items"]
    workers = [n for n in nodes if "node-role.kubernetes.io/control-plane" not in n["metadata"]["labels"]]
    assert len(nodes) == 4
    assert sorted(n["metadata"]["labels"].get(ZONE_LABEL) for n in workers) == ["zone-a", "zone-b", "zone-c"]
    for node in nodes:
        assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.34."), node["metadata"]["name"]


def test_metrics_server_reports_every_node(kit: Any) -> None:
    """Fails when metrics-server cannot scrape kind's kubelets (their TLS certificates lack IP SANs)."""

    def all_nodes_measured() -> bool:
        raw = kit.run("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes", check=False)
        return bool(raw) and len(json.loads(raw)["items"]) == 4

    kit.wait_until("metrics for all 4 nodes", all_nodes_measured, timeout=180)


def test_gateway_answers_on_the_host_port(kit: Any) -> None:
    """host port 8080 -> node port 30080 -> Envoy: a host no route claims gets Envoy's 404."""
    status, _, _ = kit.get("no-such-route.localtest.me", "/")
    assert status == 404
