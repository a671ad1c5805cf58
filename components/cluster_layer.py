"""The cluster layer (stack `kind`): add-ons installed once per cluster, shared by every phase.

Envoy Gateway (the Gateway API controller) and metrics-server (for the HPA) are Helm releases,
KEDA optionally. On the simulated cluster (`addons: crds`), where charts cannot be fetched and no
controller would run, only the add-ons' CustomResourceDefinitions are installed, from folders
that `scaleladder-local toolchain` generates with the upstream generators. On top, the kit
creates an EnvoyProxy that exposes the data plane as a NodePort (kind maps a host port to it; a
LoadBalancer would never get an address on kind, and anything waiting for one would wait
forever), a GatewayClass, and one Gateway that phase stacks attach their HTTPRoutes to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from components import charts
from components.labels import Meta
from components.settings import setting

GATEWAY_NAME = "edge"
GATEWAY_NAMESPACE = "scaleladder-gateway"
GATEWAY_CLASS = "scaleladder"
CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"


@dataclass(frozen=True)
class ClusterSpec:
    """Cluster-wide add-ons; only the `kind` stack (layer: cluster) reads this."""

    flavour: Literal["kind", "default"] = setting("kind", "which values the charts get (charts/*.yaml)")
    node_port: int = setting(
        30080, "NodePort of the Gateway's HTTP listener; kind maps host port 8080 to it", minimum=30000, maximum=32767
    )
    keda: bool = setting(
        False, "install KEDA: phase 6 scales the catalog on open connections, and workers can scale on queue lag"
    )
    addons: Literal["helm", "crds"] = setting(
        "helm",
        "helm: install the add-ons' Helm charts; crds: install only their CustomResourceDefinitions from "
        "`crds`, no controllers (the simulated cluster, which cannot fetch charts)",
    )
    crds: tuple[str, ...] = setting(
        (), "folders of CRD YAML files (addons: crds); `scaleladder-local toolchain` generates them"
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.addons == "crds" and not self.crds:
            yield "crds", "must list the folders of CRD YAML files when addons is crds, got none"
        for index, folder in enumerate(self.crds):
            if not Path(folder).is_dir():
                yield f"crds[{index}]", f"must be a folder, got {folder!r}"
        if self.addons == "helm" and self.crds:
            yield "crds", f"is read only when addons is crds, got {list(self.crds)!r} with addons helm"


def releases(spec: ClusterSpec) -> list[charts.HelmRelease]:
    """The Helm releases, in install order: the Gateway controller first, then the metrics (none for crds)."""
    if spec.addons == "crds":
        return []
    names = ["envoy-gateway", "metrics-server", *(["keda"] if spec.keda else [])]
    return [charts.load(name, spec.flavour) for name in names]


def crd_objects(spec: ClusterSpec) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in the `crds` folders (addons: crds), sorted by name; [] for helm."""
    found = []
    for folder in spec.crds if spec.addons == "crds" else ():
        crds = [
            # the generators write an empty status; the API server owns it (and Pulumi cannot set it)
            {key: value for key, value in document.items() if key != "status"}
            for path in sorted(Path(folder).glob("*.yaml"))
            for document in yaml.safe_load_all(path.read_text())
            if document and document.get("kind") == "CustomResourceDefinition"
        ]
        if not crds:
            raise ValueError(f"scaleladder:cluster.crds: no CustomResourceDefinition in {folder}")
        found += crds
    return sorted(found, key=lambda crd: str(crd["metadata"]["name"]))


def gateway_objects(meta: Meta, spec: ClusterSpec) -> list[dict[str, Any]]:
    """EnvoyProxy (NodePort data plane), GatewayClass and the shared Gateway."""
    proxy = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyProxy",
        "metadata": meta.metadata(GATEWAY_NAME, "gateway", object_name="nodeport"),
        "spec": {
            "provider": {
                "type": "Kubernetes",
                "kubernetes": {
                    "envoyService": {
                        "type": "NodePort",
                        # a fixed node port, so the kind cluster config can map a host port to it
                        "patch": {
                            "type": "StrategicMerge",
                            "value": {"spec": {"ports": [{"port": 80, "nodePort": spec.node_port}]}},
                        },
                    }
                },
            }
        },
    }
    gateway_class_metadata = meta.metadata(GATEWAY_NAME, "gateway", object_name=GATEWAY_CLASS)
    del gateway_class_metadata["namespace"]  # cluster-scoped
    gateway_class = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": gateway_class_metadata,
        "spec": {
            "controllerName": CONTROLLER,
            "parametersRef": {
                "group": "gateway.envoyproxy.io",
                "kind": "EnvoyProxy",
                "name": "nodeport",
                "namespace": meta.namespace,
            },
        },
    }
    gateway_metadata = meta.metadata(GATEWAY_NAME, "gateway")
    # its status never gets a load-balancer address on kind: Pulumi must not wait for one
    gateway_metadata["annotations"] = {"pulumi.com/skipAwait": "true"}
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": gateway_metadata,
        "spec": {
            "gatewayClassName": GATEWAY_CLASS,
            "listeners": [
                {
                    "name": "http",
                    "protocol": "HTTP",
                    "port": 80,
                    # routes may attach from the kit's own namespaces only
                    "allowedRoutes": {
                        "namespaces": {
                            "from": "Selector",
                            "selector": {"matchLabels": {"app.kubernetes.io/part-of": "scaleladder"}},
                        }
                    },
                }
            ],
        },
    }
    return [proxy, gateway_class, gateway]
