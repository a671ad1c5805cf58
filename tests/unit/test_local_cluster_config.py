"""The kind cluster file: the checked-in one passes, and every rule names the field and the value."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.local import cluster_config
from components.local.cli import GATEWAY_NODE_PORT

PINNED = "kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a"


@pytest.fixture
def document() -> dict[str, Any]:
    return dict(yaml.safe_load(cluster_config.CONFIG.read_text()))


def test_checked_in_file_is_a_valid_kind_cluster() -> None:
    cluster = cluster_config.load(GATEWAY_NODE_PORT)
    assert cluster.name == "scaleladder"
    assert cluster.context == "kind-scaleladder"
    assert cluster.node_image == PINNED
    assert (cluster.host_port, cluster.node_port) == (8080, 30080)
    assert cluster.nodes == (
        "scaleladder-control-plane",
        "scaleladder-worker",
        "scaleladder-worker2",
        "scaleladder-worker3",
    )


def test_workers_sit_in_three_zones_and_the_control_plane_in_none(document: dict[str, Any]) -> None:
    zones = [node.get("labels", {}).get(cluster_config.ZONE_LABEL) for node in document["nodes"]]
    assert zones == [None, "zone-a", "zone-b", "zone-c"]


def test_gateway_port_is_mapped_on_loopback_only(document: dict[str, Any]) -> None:
    (mapping,) = document["nodes"][0]["extraPortMappings"]
    assert mapping == {"containerPort": 30080, "hostPort": 8080, "listenAddress": "127.0.0.1", "protocol": "TCP"}


def broken(document: dict[str, Any], change: Any) -> list[str]:
    changed = copy.deepcopy(document)
    change(changed)
    return cluster_config.problems(changed, GATEWAY_NODE_PORT)


def test_the_checked_in_document_has_no_problems(document: dict[str, Any]) -> None:
    assert cluster_config.problems(document, GATEWAY_NODE_PORT) == []


def test_wrong_api_version(document: dict[str, Any]) -> None:
    assert broken(document, lambda d: d.update(apiVersion="kind.x-k8s.io/v1alpha3")) == [
        "kind/apiVersion: must be Cluster / kind.x-k8s.io/v1alpha4, got 'Cluster' / 'kind.x-k8s.io/v1alpha3'"
    ]


def test_unknown_fields_are_named(document: dict[str, Any]) -> None:
    def change(d: dict[str, Any]) -> None:
        d["node"] = []
        d["nodes"][1]["zone"] = "a"

    assert broken(document, change) == [
        "node: not a kind kind.x-k8s.io/v1alpha4 Cluster field",
        "nodes[1].zone: not a kind node field",
    ]


def test_image_must_be_pinned_by_digest(document: dict[str, Any]) -> None:
    problems = broken(document, lambda d: [node.update(image="kindest/node:v1.34.0") for node in d["nodes"]])
    assert (
        problems[0]
        == "nodes[0].image: must be kindest/node:v1.34.x pinned by @sha256 digest, got 'kindest/node:v1.34.0'"
    )
    assert len(problems) == 4


def test_nodes_must_share_one_image(document: dict[str, Any]) -> None:
    other = PINNED.replace("v1.34.0", "v1.34.1")
    assert broken(document, lambda d: d["nodes"][3].update(image=other)) == [
        f"nodes[*].image: every node must run the same node image, got {sorted([PINNED, other])}"
    ]


def test_three_workers_are_required(document: dict[str, Any]) -> None:
    assert broken(document, lambda d: d["nodes"].pop()) == [
        "nodes: must be one control-plane and three workers, got roles ['control-plane', 'worker', 'worker']"
    ]


def test_each_worker_needs_its_own_zone(document: dict[str, Any]) -> None:
    assert broken(document, lambda d: d["nodes"][2]["labels"].update({cluster_config.ZONE_LABEL: "zone-a"})) == [
        "nodes[*].labels: each worker needs its own topology.kubernetes.io/zone, got ['zone-a', 'zone-a', 'zone-c']"
    ]


def test_port_mapping_must_stay_on_loopback_and_reach_the_node_port(document: dict[str, Any]) -> None:
    def change(d: dict[str, Any]) -> None:
        d["nodes"][0]["extraPortMappings"][0].update(listenAddress="0.0.0.0", containerPort=30081)

    assert broken(document, change) == [
        "nodes[0].extraPortMappings[0].listenAddress: must be 127.0.0.1 (loopback only), got '0.0.0.0'",
        "nodes[control-plane].extraPortMappings: must map containerPort 30080 (the Gateway's nodePort) to a host "
        "port, got [{'containerPort': 30081, 'hostPort': 8080, 'listenAddress': '0.0.0.0', 'protocol': 'TCP'}]",
    ]


def test_load_reports_the_path_and_every_problem(tmp_path: Path, document: dict[str, Any]) -> None:
    document["name"] = "Scale Ladder"
    document["nodes"][0]["role"] = "master"
    path = tmp_path / "kind.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ValueError) as error:
        cluster_config.load(GATEWAY_NODE_PORT, path)
    message = str(error.value)
    assert message.startswith(f"{path}: name: must be a lowercase DNS label")
    assert "got 'Scale Ladder'" in message
    assert "nodes[0].role: must be control-plane or worker, got 'master'" in message


def test_not_a_mapping() -> None:
    assert cluster_config.problems(["a"], GATEWAY_NODE_PORT) == [
        "the file must hold one mapping (a kind Cluster), got list"
    ]
