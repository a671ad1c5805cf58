"""The cluster layer: pinned Helm releases per flavour, and the shared Gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from components import charts
from components.cluster_layer import ClusterSpec, crd_objects, gateway_objects, releases
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


CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {name}
spec:
  group: example.com
status:
  acceptedNames: {{kind: "", plural: ""}}
"""


def test_crds_mode_installs_no_release_and_reads_every_crd_of_the_folders(tmp_path: Path) -> None:
    (tmp_path / "gateway-api").mkdir()
    (tmp_path / "gateway-api" / "b.yaml").write_text(CRD.format(name="httproutes.example.com"))
    (tmp_path / "keda").mkdir()
    (tmp_path / "keda" / "a.yaml").write_text(CRD.format(name="gateways.example.com") + "---\n# empty\n")
    spec = ClusterSpec(addons="crds", crds=(str(tmp_path / "gateway-api"), str(tmp_path / "keda")))
    assert releases(spec) == []
    assert [crd["metadata"]["name"] for crd in crd_objects(spec)] == ["gateways.example.com", "httproutes.example.com"]
    assert all("status" not in crd for crd in crd_objects(spec))  # the API server owns it
    assert crd_objects(ClusterSpec()) == []


def test_crds_mode_needs_folders_of_crds(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    assert list(ClusterSpec(addons="crds").problems()) == [
        ("crds", "must list the folders of CRD YAML files when addons is crds, got none")
    ]
    assert list(ClusterSpec(addons="crds", crds=(str(tmp_path), missing)).problems()) == [
        ("crds[1]", f"must be a folder, got {missing!r}")
    ]
    assert list(ClusterSpec(crds=(str(tmp_path),)).problems()) == [
        ("crds", f"is read only when addons is crds, got {[str(tmp_path)]!r} with addons helm")
    ]
    with pytest.raises(ValueError, match=r"scaleladder:cluster.crds: no CustomResourceDefinition in "):
        crd_objects(ClusterSpec(addons="crds", crds=(str(tmp_path),)))
