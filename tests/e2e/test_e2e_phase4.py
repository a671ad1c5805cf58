"""Phase 4 on kind: Redis Cluster covers all 16384 slots again after a master pod is deleted."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.e2e
PHASE = 4
SLOTS = 16384


def cluster_info(kit: Any, namespace: str, pod: str) -> dict[str, str]:
    text = kit.exec(namespace, pod, "redis", "redis-cli", "cluster", "info")
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def healthy(kit: Any, namespace: str, pod: str) -> bool:
    try:
        info = cluster_info(kit, namespace, pod)
    except AssertionError:
        return False
    return info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == str(SLOTS)


def test_slots_are_covered_again_after_a_master_is_deleted(kit: Any, deployed: str) -> None:
    pods = sorted(pod["metadata"]["name"] for pod in kit.ready_pods(deployed, "redis"))
    assert len(pods) >= 6, pods
    assert healthy(kit, deployed, pods[0]), cluster_info(kit, deployed, pods[0])
    victim = next(pod for pod in pods if kit.exec(deployed, pod, "redis", "redis-cli", "role").split()[0] == "master")
    witness = next(pod for pod in pods if pod != victim)
    kit.run("delete", "pod", victim, "-n", deployed, "--wait=false")
    # the victim's replica is promoted, then the restarted pod rejoins under its stable DNS name
    kit.wait_until(
        f"all {SLOTS} slots served again after deleting {victim}",
        lambda: healthy(kit, deployed, witness),
        timeout=300,
    )
    kit.wait_until(
        f"{victim} Ready again",
        lambda: victim in {p["metadata"]["name"] for p in kit.ready_pods(deployed, "redis")},
        timeout=300,
    )
    kit.wait_until(f"{victim} agrees the cluster is whole", lambda: healthy(kit, deployed, victim), timeout=300)
    # no member is flagged failing (fail or fail?), and no stale entry of the old pod lingers
    nodes = kit.exec(deployed, witness, "redis", "redis-cli", "cluster", "nodes").strip().splitlines()
    flags = [line.split()[2].split(",") for line in nodes]
    assert not [f for f in flags if "fail" in f or "fail?" in f], nodes
    assert len(nodes) == len(pods), nodes
