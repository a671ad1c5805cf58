"""The local flow agrees with the rest of the kit: ports, names, namespaces, image names, docs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from components import charts, cluster_layer, config, patroni, routing, settings, web
from components.labels import Meta
from components.local import cluster_config, guide, image, plan, workspace
from components.local.cli import GATEWAY_NODE_PORT, ROOT

DOCS = ROOT / "docs" / "local.md"


def test_kind_maps_the_node_port_the_cluster_layer_exposes() -> None:
    kind_stack = yaml.safe_load((ROOT / "stacks" / "Pulumi.kind.yaml").read_text())["config"]
    node_port = kind_stack.get("scaleladder:cluster", {}).get("node_port", cluster_layer.ClusterSpec().node_port)
    assert node_port == GATEWAY_NODE_PORT
    assert cluster_config.load(node_port).node_port == node_port


def test_waits_name_the_gateway_the_cluster_layer_creates() -> None:
    assert plan.GATEWAY == (cluster_layer.GATEWAY_NAME, cluster_layer.GATEWAY_NAMESPACE)


def test_down_deletes_the_namespaces_helm_creates_for_the_charts() -> None:
    releases = cluster_layer.releases(cluster_layer.ClusterSpec(keda=True))
    created = sorted({release.namespace for release in releases} - {"kube-system"})
    assert sorted(plan.ADDON_NAMESPACES) == created
    assert {release.chart for release in releases} >= {charts.load("envoy-gateway", "kind").chart}


def test_guide_hostname_is_the_route_default() -> None:
    meta = Meta(namespace="scaleladder-phase3", instance="phase3", version="0")
    assert guide.hostname(3) == routing.hostname(meta, routing.RoutingSpec())


def test_content_hash_image_is_a_valid_web_image() -> None:
    assert re.fullmatch(web.IMAGE_PATTERN, "scaleladder/sample:0123456789ab")


def test_docs_list_every_e2e_test_file_and_the_pinned_node_image() -> None:
    text = DOCS.read_text()
    for path in sorted(Path(ROOT / "tests" / "e2e").glob("test_*.py")):
        assert f"`{path.name}`" in text, path.name
    assert cluster_config.load(GATEWAY_NODE_PORT).node_image.split("@sha256:")[0] in text
    assert "--phase" in text
    assert "missing here: docker engine, kind, pulumi" in text


def test_content_hash_image_is_a_valid_postgres_ha_image() -> None:
    spec, problems = settings.load(patroni.PatroniSpec, {"image": "scaleladder/postgres-patroni:0123456789ab"}, "ha")
    assert problems == [] and spec is not None
    assert image.POSTGRES.repository == patroni.IMAGE_REPOSITORY
    assert patroni.PatroniSpec().image.startswith(f"{image.POSTGRES.repository}:")


def test_the_program_reads_the_images_from_the_generated_stack_file_and_ignores_the_context() -> None:
    """The generated file, as the engine hands it to the program (objects as JSON strings)."""
    checked_in = yaml.safe_load((ROOT / "stacks" / "Pulumi.phase3.yaml").read_text())
    images = ["scaleladder/sample:0123456789ab", "scaleladder/postgres-patroni:ba9876543210"]
    document = workspace.stack_document(checked_in, {}, "kind-scaleladder", images)
    engine = {key: value if isinstance(value, str) else json.dumps(value) for key, value in document["config"].items()}
    loaded = config.from_pulumi_config(engine)
    assert loaded.web.image == "scaleladder/sample:0123456789ab"
    assert loaded.postgres.ha.image == "scaleladder/postgres-patroni:ba9876543210"
    assert loaded.phase == 3
    # every build's setting is a real setting of the program, read where the workspace writes it
    for build in image.BUILDS:
        value: object = loaded
        for key in build.setting:
            value = getattr(value, key)
        assert value in images, build
