"""Phase 6 on kind: an Envoy circuit-breaker sidecar trips when the upstream it guards fails.

The test reads the sidecar's own bootstrap (its ConfigMap) to find an outbound listener and the
upstream behind it, makes that upstream fail by scaling its Deployment to zero, sends a bounded
number of requests through the listener from loopback (kubectl port-forward into the pod), and
reads Envoy's admin counters; then it restores the upstream and waits for the listener to pass
requests again.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from components.circuit_breaker import CONFIG_FILE, NAME

pytestmark = pytest.mark.e2e
PHASE = 6
REQUESTS = 60
TRIPPED = (
    "outlier_detection.ejections_enforced_total",
    "upstream_cx_none_healthy",
    "upstream_rq_pending_overflow",
    "upstream_rq_active_overflow",
)


def sidecar_pod(kit: Any, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pod running the breaker as a native sidecar with an upstream, and that sidecar's Envoy bootstrap
    (a role that calls nobody has a sidecar for its inbound side only)."""
    for pod in kit.json("get", "pods", "-n", namespace)["items"]:
        sidecars = [c for c in pod["spec"].get("initContainers", []) if c["name"] == NAME]
        if sidecars and pod["status"].get("phase") == "Running":
            mounts = {mount["name"] for mount in sidecars[0].get("volumeMounts", [])}
            maps = [v["configMap"]["name"] for v in pod["spec"]["volumes"] if v["name"] in mounts and "configMap" in v]
            (config_map,) = maps
            data = kit.json("get", "configmap", config_map, "-n", namespace)["data"][CONFIG_FILE]
            bootstrap = yaml.safe_load(data)
            listeners = bootstrap["static_resources"]["listeners"]
            if any(listener["name"].startswith("outbound_") for listener in listeners):
                return pod, bootstrap
    raise AssertionError(f"no running pod in {namespace} has a {NAME} sidecar with an upstream")


def outbound(bootstrap: dict[str, Any]) -> tuple[str, int, str]:
    """The first outbound listener: (upstream cluster name, local port, upstream host)."""
    listener = next(item for item in bootstrap["static_resources"]["listeners"] if item["name"].startswith("outbound_"))
    name = listener["name"].removeprefix("outbound_")
    port = listener["address"]["socket_address"]["port_value"]
    cluster = next(item for item in bootstrap["static_resources"]["clusters"] if item["name"] == name)
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    return name, port, endpoint["address"]["socket_address"]["address"]


def backing_deployments(kit: Any, namespace: str, host: str) -> dict[str, int]:
    """Deployments behind the Service a host name points at, with their replica counts."""
    service = kit.json("get", "service", host.split(".")[0], "-n", namespace)
    selector = service["spec"]["selector"].items()
    found = {
        item["metadata"]["name"]: item["spec"].get("replicas", 1)
        for item in kit.json("get", "deployments", "-n", namespace)["items"]
        if selector <= item["spec"]["template"]["metadata"]["labels"].items()
    }
    assert found, f"no Deployment behind Service {host}"
    return found


def counters(kit: Any, admin: int, cluster: str) -> dict[str, int]:
    text = kit.http(f"http://127.0.0.1:{admin}/stats?filter=^cluster\\.{re.escape(cluster)}\\.")[2].decode()
    pairs = (line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return {key.removeprefix(f"cluster.{cluster}."): int(value) for key, value in pairs if value.isdigit()}


def test_breaker_trips_when_the_upstream_fails(kit: Any, deployed: str) -> None:
    pod, bootstrap = sidecar_pod(kit, deployed)
    cluster, local_port, host = outbound(bootstrap)
    admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
    deployments = backing_deployments(kit, deployed, host)
    target = f"pod/{pod['metadata']['name']}"
    with kit.port_forward(deployed, target, admin_port) as admin, kit.port_forward(deployed, target, local_port) as out:
        before = counters(kit, admin, cluster)
        try:
            for name in deployments:
                kit.run("scale", "deployment", name, "-n", deployed, "--replicas=0")
            for name in deployments:
                kit.wait_until(
                    f"{name} scaled to zero",
                    lambda name=name: (
                        kit.json("get", "deployment", name, "-n", deployed)["status"].get("replicas", 0) == 0
                    ),
                    timeout=120,
                )
            statuses = [kit.http(f"http://127.0.0.1:{out}/healthz", timeout=10.0)[0] for _ in range(REQUESTS)]
            after = counters(kit, admin, cluster)
        finally:
            for name, replicas in deployments.items():
                kit.run("scale", "deployment", name, "-n", deployed, f"--replicas={replicas}")
        assert set(statuses) <= {502, 503, 504}, statuses
        tripped = {key: after.get(key, 0) - before.get(key, 0) for key in TRIPPED}
        assert any(delta > 0 for delta in tripped.values()), tripped
        kit.wait_until(
            f"{cluster} passes requests again once restored",
            lambda: kit.http(f"http://127.0.0.1:{out}/healthz", timeout=10.0)[0] == 200,
            timeout=300,
        )
