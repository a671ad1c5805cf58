"""The cluster layer (stack `kind`): add-ons installed once per cluster, shared by every phase.

Envoy Gateway (the Gateway API controller) and metrics-server (for the HPA) are Helm releases,
KEDA optionally. On top, the kit creates an EnvoyProxy that exposes the data plane as a NodePort
(kind maps a host port to it; a LoadBalancer would never get an address on kind, and anything
waiting for one would wait forever), a GatewayClass, and one Gateway that phase stacks attach
their HTTPRoutes to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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
    keda: bool = setting(False, "install KEDA, so phase 6 workers can scale on queue lag")


def releases(spec: ClusterSpec) -> list[charts.HelmRelease]:
    """The Helm releases, in install order: the Gateway controller first, then the metrics."""
    names = ["envoy-gateway", "metrics-server", *(["keda"] if spec.keda else [])]
    return [charts.load(name, spec.flavour) for name in names]


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
