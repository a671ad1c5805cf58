"""Phase 1 on kind: the web process and Postgres in one pod, reached with kubectl port-forward."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.e2e
PHASE = 1


def test_one_pod_holds_web_and_database(kit: Any, deployed: str) -> None:
    """Postgres runs as a native sidecar (an init container that keeps running) next to web."""
    (pod,) = kit.ready_pods(deployed, "web")
    names = {container["name"] for container in pod["spec"]["containers"]}
    sidecars = {c["name"] for c in pod["spec"].get("initContainers", []) if c.get("restartPolicy") == "Always"}
    assert "web" in names
    assert "postgres" in sidecars
    running = {
        status["name"] for status in pod["status"].get("initContainerStatuses", []) if "running" in status["state"]
    }
    assert "postgres" in running
    assert kit.json("get", "hpa", "-n", deployed)["items"] == []


def test_serves_through_port_forward(kit: Any, deployed: str) -> None:
    with kit.port_forward(deployed, "svc/web", 80) as port:
        assert kit.http(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert kit.http(f"http://127.0.0.1:{port}/readyz")[0] == 200
