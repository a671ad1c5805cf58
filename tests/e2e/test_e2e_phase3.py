"""Phase 3 on kind: Gateway route, autoscaled web tier spread over zones, streaming read replica.

Load is generated from this machine to the Gateway on loopback (host port 8080), bounded in time
and count; it stops as soon as the HPA has asked for more replicas.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from typing import Any

import pytest

from components.local import guide, plan
from components.local.cluster_config import ZONE_LABEL

pytestmark = pytest.mark.e2e
PHASE = 3
HOST = guide.hostname(PHASE)
LOAD_SECONDS = 300.0
LOAD_REQUESTS = 300_000
LOAD_CLIENTS = 16


def test_route_reaches_the_web_tier(kit: Any, deployed: str) -> None:
    assert kit.get(HOST, "/healthz")[0] == 200
    status, _, body = kit.get(HOST, "/products")
    assert status == 200, body[:300]


def test_web_pods_have_a_budget_and_spread_over_zones(kit: Any, deployed: str) -> None:
    budget = kit.json("get", "pdb", "web", "-n", deployed)
    hpa = kit.json("get", "hpa", "web", "-n", deployed)
    pods = kit.ready_pods(deployed, "web")
    assert len(pods) >= hpa["spec"]["minReplicas"] >= 2
    assert budget["status"]["currentHealthy"] >= budget["status"]["desiredHealthy"]
    zones = {kit.json("get", "node", pod["spec"]["nodeName"])["metadata"]["labels"][ZONE_LABEL] for pod in pods}
    assert len(zones) >= 2, zones


def generate_load(kit: Any, stop: threading.Event, sent: list[int]) -> None:
    """GET /products through the Gateway until `stop`, the time limit or the request budget."""
    deadline = time.monotonic() + LOAD_SECONDS
    while not stop.is_set() and time.monotonic() < deadline and sent[0] < LOAD_REQUESTS:
        sent[0] += 1
        try:
            kit.get(HOST, "/products", timeout=5.0)
        except OSError:
            time.sleep(0.05)


def test_hpa_scales_out_under_load_and_pulumi_leaves_replicas_to_it(kit: Any, deployed: str) -> None:
    hpa = kit.json("get", "hpa", "web", "-n", deployed)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    minimum = hpa["spec"]["minReplicas"]
    stop = threading.Event()
    sent = [0]
    clients = [threading.Thread(target=generate_load, args=(kit, stop, sent)) for _ in range(LOAD_CLIENTS)]
    for client in clients:
        client.start()
    try:
        kit.wait_until(
            f"HPA web asks for more than {minimum} replicas under load",
            lambda: kit.json("get", "hpa", "web", "-n", deployed)["status"].get("desiredReplicas", 0) > minimum,
            timeout=LOAD_SECONDS,
            interval=10.0,
        )
    finally:
        stop.set()
        for client in clients:
            client.join()
    # the Deployment leaves spec.replicas to the HPA: Pulumi sees nothing to change after the scale-out
    stack = plan.phase_stack(PHASE)
    preview = subprocess.run(
        (
            "pulumi",
            "preview",
            "--stack",
            stack,
            "--config-file",
            str(kit.ctx.workspace.stack_file(stack)),
            "--expect-no-changes",
            "--non-interactive",
        ),
        cwd=kit.ctx.root,
        env={**os.environ, **kit.ctx.pulumi_env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert preview.returncode == 0, preview.stdout[-3000:] + preview.stderr[-2000:]


def test_a_streaming_replica_serves_reads(kit: Any, deployed: str) -> None:
    replicas = kit.json("get", "pods", "-n", deployed, "-l", "app.kubernetes.io/name=postgres,role=replica")["items"]
    assert len(replicas) == 2, "Patroni labels two members role=replica"
    in_recovery = kit.exec(
        deployed, replicas[0]["metadata"]["name"], "postgres", "psql", "-XAtq", "-c", "SELECT pg_is_in_recovery()"
    )
    assert in_recovery.strip() == "t"
    for _ in range(50):
        assert kit.get(HOST, "/products")[0] == 200
    replica_queries = 0.0
    for pod in kit.ready_pods(deployed, "web"):
        with kit.port_forward(deployed, f"pod/{pod['metadata']['name']}", 8080) as port:
            metrics = kit.http(f"http://127.0.0.1:{port}/metrics")[2].decode()
        found = re.search(r'^db_queries_total\{target="replica"\} ([0-9.e+]+)$', metrics, re.MULTILINE)
        replica_queries += float(found[1]) if found else 0.0
    assert replica_queries > 0
