"""Phase 4 on kind: no master shares a node with its replica, and the Redis Cluster covers all 16384
slots again after a master pod is deleted."""

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


def replication(kit: Any, namespace: str, pod: str) -> dict[str, str]:
    """Every replica pod and the pod of the master it replicates, from `cluster nodes` (announced hostnames)."""
    lines = kit.exec(namespace, pod, "redis", "redis-cli", "cluster", "nodes").strip().splitlines()
    fields = [line.split() for line in lines]
    pod_of = {f[0]: f[1].partition(",")[2].split(".")[0] for f in fields}
    return {pod_of[f[0]]: pod_of[f[3]] for f in fields if f[3] != "-"}


def test_no_master_shares_a_node_with_its_replica(kit: Any, deployed: str) -> None:
    pods = kit.ready_pods(deployed, "redis")
    node_of = {pod["metadata"]["name"]: pod["spec"]["nodeName"] for pod in pods}
    pairs = replication(kit, deployed, sorted(node_of)[0])
    assert len(pairs) == len(pods) // 2, pairs
    for replica, master in pairs.items():
        # a replica follows the master of its own shard (StatefulSet redis-shard-N)
        assert replica.rsplit("-", 1)[0] == master.rsplit("-", 1)[0], pairs
        assert node_of[replica] != node_of[master], (replica, master, node_of)


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
