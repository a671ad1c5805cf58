"""The kind cluster file (local/kind-cluster.yaml): load it, check its shape, name its nodes.

The check covers kind's `kind.x-k8s.io/v1alpha4` Cluster fields the kit relies on, and the
kit's own rules: one control plane, three workers in three zones, every node on the same node
image pinned by digest, and the Gateway's node port mapped to a loopback host port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONFIG = Path(__file__).resolve().parent.parent.parent / "local" / "kind-cluster.yaml"
API_VERSION = "kind.x-k8s.io/v1alpha4"
ZONE_LABEL = "topology.kubernetes.io/zone"
NODE_IMAGE = re.compile(r"kindest/node:v1\.34\.\d+@sha256:[0-9a-f]{64}")
CLUSTER_FIELDS = {
    "kind",
    "apiVersion",
    "name",
    "nodes",
    "networking",
    "featureGates",
    "runtimeConfig",
    "kubeadmConfigPatches",
    "kubeadmConfigPatchesJSON6902",
    "containerdConfigPatches",
    "containerdConfigPatchesJSON6902",
}
NODE_FIELDS = {
    "role",
    "image",
    "labels",
    "extraMounts",
    "extraPortMappings",
    "kubeadmConfigPatches",
    "kubeadmConfigPatchesJSON6902",
}
GATEWAY_NODE_PORT = 30080  # the cluster layer's Gateway NodePort (cluster.node_port)
PORT_MAPPING_FIELDS = {"containerPort", "hostPort", "listenAddress", "protocol"}


@dataclass(frozen=True)
class KindCluster:
    """What the flow needs to know about the cluster file."""

    path: Path
    name: str
    node_image: str
    host_port: int
    node_port: int
    nodes: tuple[str, ...]

    @property
    def context(self) -> str:
        """The kubeconfig context `kind create cluster` writes."""
        return f"kind-{self.name}"


def node_containers(name: str, document: dict[str, Any]) -> list[str]:
    """Docker container names of the nodes as kind names them, in file order: `<name>-worker2`."""
    counts: dict[str, int] = {}
    names = []
    for node in document.get("nodes", []):
        role = node.get("role", "control-plane")
        counts[role] = counts.get(role, 0) + 1
        suffix = "" if counts[role] == 1 else str(counts[role])
        names.append(f"{name}-{role}{suffix}")
    return names


def problems(document: Any, node_port: int) -> list[str]:
    """Everything wrong with a kind cluster document, each naming the field, the value and the rule."""
    if not isinstance(document, dict):
        return [f"the file must hold one mapping (a kind Cluster), got {type(document).__name__}"]
    found: list[str] = []
    if document.get("kind") != "Cluster" or document.get("apiVersion") != API_VERSION:
        found.append(
            f"kind/apiVersion: must be Cluster / {API_VERSION}, "
            f"got {document.get('kind')!r} / {document.get('apiVersion')!r}"
        )
    found += [f"{key}: not a kind {API_VERSION} Cluster field" for key in sorted(set(document) - CLUSTER_FIELDS)]
    if not isinstance(document.get("name"), str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", document["name"]):
        found.append(
            f"name: must be a lowercase DNS label (the kubeconfig context is kind-<name>), got {document.get('name')!r}"
        )
    nodes = document.get("nodes")
    if not isinstance(nodes, list) or not all(isinstance(node, dict) for node in nodes):
        return [*found, f"nodes: must be a list of nodes, got {nodes!r}"]
    for index, node in enumerate(nodes):
        found += node_problems(f"nodes[{index}]", node)
    roles = [node.get("role") for node in nodes]
    if roles.count("control-plane") != 1 or roles.count("worker") != 3:
        found.append(f"nodes: must be one control-plane and three workers, got roles {roles}")
    images = {node.get("image") for node in nodes}
    if len(images) != 1:
        found.append(f"nodes[*].image: every node must run the same node image, got {sorted(map(str, images))}")
    zones = [node.get("labels", {}).get(ZONE_LABEL) for node in nodes if node.get("role") == "worker"]
    if None in zones or len(set(zones)) != len(zones):
        found.append(f"nodes[*].labels: each worker needs its own {ZONE_LABEL}, got {zones}")
    mappings = [
        mapping
        for node in nodes
        if node.get("role") == "control-plane"
        for mapping in node.get("extraPortMappings", [])
    ]
    if not any(mapping.get("containerPort") == node_port for mapping in mappings):
        found.append(
            f"nodes[control-plane].extraPortMappings: must map containerPort {node_port} "
            f"(the Gateway's nodePort) to a host port, got {mappings}"
        )
    return found


def node_problems(where: str, node: dict[str, Any]) -> list[str]:
    found = [f"{where}.{key}: not a kind node field" for key in sorted(set(node) - NODE_FIELDS)]
    if node.get("role") not in ("control-plane", "worker"):
        found.append(f"{where}.role: must be control-plane or worker, got {node.get('role')!r}")
    if not isinstance(node.get("image"), str) or not NODE_IMAGE.fullmatch(node["image"]):
        found.append(f"{where}.image: must be kindest/node:v1.34.x pinned by @sha256 digest, got {node.get('image')!r}")
    for number, mapping in enumerate(node.get("extraPortMappings", [])):
        at = f"{where}.extraPortMappings[{number}]"
        found += [f"{at}.{key}: not a kind port mapping field" for key in sorted(set(mapping) - PORT_MAPPING_FIELDS)]
        for key in ("containerPort", "hostPort"):
            if not isinstance(mapping.get(key), int) or not 1 <= mapping[key] <= 65535:
                found.append(f"{at}.{key}: must be a port number 1-65535, got {mapping.get(key)!r}")
        if mapping.get("listenAddress") != "127.0.0.1":
            found.append(f"{at}.listenAddress: must be 127.0.0.1 (loopback only), got {mapping.get('listenAddress')!r}")
        if mapping.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
            found.append(f"{at}.protocol: must be TCP, UDP or SCTP, got {mapping.get('protocol')!r}")
    return found


def load(node_port: int, path: Path = CONFIG) -> KindCluster:
    """The cluster file, checked; ValueError lists every problem with the file's path."""
    document = yaml.safe_load(path.read_text())
    found = problems(document, node_port)
    if found:
        raise ValueError(f"{path}: " + "; ".join(found))
    control_plane = next(node for node in document["nodes"] if node["role"] == "control-plane")
    mapping = next(item for item in control_plane["extraPortMappings"] if item["containerPort"] == node_port)
    return KindCluster(
        path=path,
        name=document["name"],
        node_image=control_plane["image"],
        host_port=mapping["hostPort"],
        node_port=node_port,
        nodes=tuple(node_containers(document["name"], document)),
    )
