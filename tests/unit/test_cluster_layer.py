"""The cluster layer: pinned Helm releases per flavour, and the shared Gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from components import charts
from components.cluster_layer import ClusterSpec, gateway_objects, releases
from components.labels import Meta

META = Meta(namespace="scaleladder-gateway", instance="kind", version="0.0.0")


def test_releases_in_install_order_with_kind_values() -> None:
    installed = releases(ClusterSpec(flavour="kind"))
    assert [r.name for r in installed] == ["envoy-gateway", "metrics-server"]
    metrics = installed[1]
    assert "--kubelet-insecure-tls" in metrics.values["args"]
    assert all(charts.EXACT_VERSION.fullmatch(r.version) for r in installed)


def test_default_flavour_has_no_kind_workarounds() -> None:
    metrics = releases(ClusterSpec(flavour="default"))[1]
    assert "args" not in metrics.values


def test_keda_is_optional() -> None:
    assert [r.name for r in releases(ClusterSpec(keda=True))][-1] == "keda"


def test_gateway_is_exposed_on_a_fixed_node_port_and_never_awaited() -> None:
    proxy, gateway_class, gateway = gateway_objects(META, ClusterSpec(node_port=30123))
    service = proxy["spec"]["provider"]["kubernetes"]["envoyService"]
    assert service["type"] == "NodePort"
    assert service["patch"]["value"]["spec"]["ports"] == [{"port": 80, "nodePort": 30123}]
    assert "namespace" not in gateway_class["metadata"]
    assert gateway_class["spec"]["parametersRef"]["name"] == proxy["metadata"]["name"]
    assert gateway["spec"]["gatewayClassName"] == gateway_class["metadata"]["name"]
    assert gateway["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("release: x\n", "`namespace` is required; `chart` is required; `version` is required; `values` is required"),
        (
            "release: x\nnamespace: n\nchart: c\nrepository: https://r\nversion: latest\nvalues: {kind: {}}\n",
            "version must be exact (x.y.z), got 'latest'",
        ),
        (
            "release: x\nnamespace: n\nchart: oci://r/c\nrepository: https://r\nversion: 1.0.0\nvalues: {kind: {}}\n",
            "needs a `repository` for a named chart, and none for an oci:// chart",
        ),
        (
            "release: x\nnamespace: n\nchart: c\nrepository: https://r\nversion: 1.0.0\nvalues: {default: {}}\n",
            "has no values for flavour 'kind'; flavours: default",
        ),
    ],
)
def test_chart_file_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(ValueError) as caught:
        charts.load("x", "kind", tmp_path)
    assert str(caught.value) == f"{tmp_path / 'x.yaml'}: {message}"
