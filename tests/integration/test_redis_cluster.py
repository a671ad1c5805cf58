"""The kit's Redis Cluster, for real: rendered redis.conf, node-start.sh, cluster-bootstrap.sh and
cluster-rejoin.sh run against redis-server processes on loopback, each node with its rejoin
sidecar, standing in for a pod (its own 127.x.y.z address, a stable announced hostname, its own
directory as volume): see bench/redis_support.py. The timings printed are for information;
bench/redis_failover.py measures.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from bench.redis_support import SLOTS, LoopbackCluster, slot_count
from components.redis import SCRIPTS, RedisSpec

pytestmark = pytest.mark.integration

SPEC = RedisSpec(enabled=True, mode="cluster", node_timeout_ms=2000)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[object]:
    clusters: list[LoopbackCluster] = []

    def make(spec: RedisSpec = SPEC) -> LoopbackCluster:
        cluster = LoopbackCluster(tmp_path / f"cluster{len(clusters)}", spec)
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


def assert_bootstrapped(cluster: LoopbackCluster) -> subprocess.CompletedProcess[str]:
    result = cluster.bootstrap()
    assert result.returncode == 0, f"bootstrap failed:\n{result.stdout}\n{result.stderr}"
    return result


def shape(cluster: LoopbackCluster) -> dict[str, tuple[object, ...]]:
    """Who is what, as every node sees it: node IDs, roles, masters, slots, addresses."""
    views = {}
    for node in cluster.nodes:
        view = node.nodes()
        views[node.hostname] = tuple(
            sorted(
                (key, entry["address"], "master" in entry["flags"], entry["master"], entry["slots"])
                for key, entry in view.items()
            )
        )
    return views


def replicated(cluster: LoopbackCluster) -> dict[str, str]:
    """Every replica's hostname and the hostname of the master it replicates, as the first node sees it."""
    view = cluster.nodes[0].nodes()
    by_id = {key: entry["hostname"] for key, entry in view.items()}
    return {str(entry["hostname"]): str(by_id[entry["master"]]) for entry in view.values() if entry["master"] != "-"}


def shard_of(cluster: LoopbackCluster, hostname: str) -> int:
    return next(node.shard for node in cluster.nodes if node.hostname == hostname)


def test_bootstrap_forms_the_cluster_with_every_slot_covered(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)

    masters = cluster.masters()
    assert len(masters) == 3
    assert sum(slot_count(entry["slots"]) for entry in masters.values()) == SLOTS
    for node in cluster.nodes:
        info = node.info()
        assert (info["cluster_state"], info["cluster_slots_ok"], info["cluster_known_nodes"]) == ("ok", "16384", "6")
    # each shard's pod 0 is its master, pod 1 replicates it (and so never shares its Kubernetes node)
    assert replicated(cluster) == {
        "redis-shard-0-1.test": "redis-shard-0-0.test",
        "redis-shard-1-1.test": "redis-shard-1-0.test",
        "redis-shard-2-1.test": "redis-shard-2-0.test",
    }
    view = cluster.nodes[0].nodes()
    # every node announces its hostname, the name clients are sent to
    assert {entry["hostname"] for entry in view.values()} == {node.hostname for node in cluster.nodes}
    # the password from the Secret is required
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(cluster.nodes[0].ip, cluster.port).ping()
    with cluster.client() as client:
        for index in range(200):
            client.set(f"key:{index}", index)
        assert [client.get(f"key:{index}") for index in range(200)] == [str(index) for index in range(200)]


def test_running_the_bootstrap_twice_changes_nothing(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    before = shape(cluster)
    epochs = {node.hostname: node.info()["cluster_current_epoch"] for node in cluster.nodes}

    second = assert_bootstrapped(cluster)

    assert shape(cluster) == before
    assert {node.hostname: node.info()["cluster_current_epoch"] for node in cluster.nodes} == epochs
    assert "creating" not in second.stderr and "meets" not in second.stderr


def test_killing_a_master_promotes_its_replica(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    cluster.write_acknowledged({"{failover}:acked": "yes"})

    elapsed, victim, replica_id = cluster.fail_over("{failover}:acked")

    print(f"\nfailover: every slot served again {elapsed:.2f} s after SIGKILL (node timeout {SPEC.node_timeout_ms} ms)")
    # The failure detector's bound, not a benchmark (bench/redis_failover.py measures): peers send
    # their next ping to the dead master within node_timeout/2, flag it PFAIL node_timeout later,
    # exchange failure reports within another node_timeout/2 (+1 s of cron cadence), then the
    # replica waits 0.5 to 1 s before its election.
    timeout = SPEC.node_timeout_ms / 1000
    assert elapsed <= 2 * timeout + 3
    with cluster.client() as client:
        assert client.get("{failover}:acked") == "yes"
    # the killed pod comes back (same name, volume and address) as the new master's replica
    victim.start(victim.ip)

    def replicates_the_new_master() -> bool:
        me = next(entry for entry in victim.nodes().values() if "myself" in entry["flags"])
        return me["master"] == replica_id and victim.info()["cluster_state"] == "ok"

    cluster.wait("rejoined as a replica", replicates_the_new_master, timeout=20)
    # roles swapped inside the shard: every replica still replicates a member of its own shard
    pairs = replicated(cluster).items()
    assert all(shard_of(cluster, replica) == shard_of(cluster, master) for replica, master in pairs)


def test_a_master_stopped_by_kubernetes_hands_its_slots_over_first(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    cluster.write_acknowledged({"{handover}:acked": "yes"})
    victim = cluster.owner("{handover}:acked")
    env = {**cluster.env(), "REDIS_SELF": victim.address}

    start = time.monotonic()
    result = subprocess.run(
        ["sh", str(SCRIPTS / "node-stop.sh")], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    handover = time.monotonic() - start
    victim.stop()  # SIGTERM after preStop, as the kubelet does

    assert result.returncode == 0, result.stderr
    assert "is now slave" in result.stderr
    print(f"\nhandover: preStop took {handover:.2f} s; the master is a replica before SIGTERM")
    new_owner = cluster.owner("{handover}:acked")
    assert new_owner is not victim
    # served at once: no node timeout to wait out, no election
    assert all(node.info()["cluster_state"] == "ok" for node in cluster.running())
    with cluster.client() as client:
        assert client.get("{handover}:acked") == "yes"
        client.set("{handover}:after", "written")
    # a master whose replica is gone, and a replica, have nothing to hand over
    masters = {str(entry["address"]) for entry in cluster.masters().values()}
    replica = next(node for node in cluster.running() if node.address not in masters)
    for node in (new_owner, replica):
        env = {**cluster.env(), "REDIS_SELF": node.address}
        again = subprocess.run(
            ["sh", str(SCRIPTS / "node-stop.sh")], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert (again.returncode, again.stderr) == (0, "")
    assert cluster.owner("{handover}:acked") is new_owner


def test_every_node_restarted_with_new_addresses_rejoins_without_losing_acknowledged_keys(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    before = cluster.masters()
    acknowledged = {f"{{user{index % 30}}}:session:{index}": f"value-{index}" for index in range(300)}
    cluster.write_acknowledged(acknowledged)

    for node in cluster.nodes:
        node.stop()
    # every pod comes back at once, each with a new IP, its name and its volume
    cluster.start(first_host=100)

    cluster.wait(
        "healthy after the restart",
        lambda: all(
            node.info()["cluster_state"] == "ok" and node.info()["cluster_known_nodes"] == "6" for node in cluster.nodes
        ),
        timeout=30,
    )
    after = cluster.masters()
    assert {key: entry["slots"] for key, entry in after.items()} == {
        key: entry["slots"] for key, entry in before.items()
    }
    addresses = {entry["address"] for entry in cluster.nodes[0].nodes().values()}
    assert addresses == {node.address for node in cluster.nodes}
    with cluster.client() as client:
        assert {key: client.get(key) for key in acknowledged} == acknowledged
    # the Job, run again, finds it healthy and changes nothing
    assert "meets" not in assert_bootstrapped(cluster).stderr


def test_scale_out_from_three_to_four_masters_rebalances(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    keys = {f"item:{index}": str(index) for index in range(2000)}
    with cluster.client() as client:
        for key, value in keys.items():
            client.set(key, value)
    before = {key: slot_count(entry["slots"]) for key, entry in cluster.masters().items()}

    bigger = replace(cluster.spec, masters=4)
    added = cluster.grow(bigger, first_host=2)
    start = time.monotonic()
    assert_bootstrapped(cluster)
    elapsed = time.monotonic() - start

    masters = cluster.masters()
    after = {key: slot_count(entry["slots"]) for key, entry in masters.items()}
    view = cluster.nodes[0].nodes()
    by_address = {entry["address"]: key for key, entry in view.items()}
    new_ids = {by_address[node.address] for node in added}
    new_master = next(iter(new_ids & set(masters)))
    moved = after[new_master]
    print(
        f"\nscale-out 3 -> 4 masters: bootstrap took {elapsed:.2f} s, {moved} slots moved to the new master; "
        f"slots per master before {sorted(before.values())}, after {sorted(after.values())}"
    )
    assert len(masters) == 4 and sum(after.values()) == SLOTS
    assert max(after.values()) - min(after.values()) <= SLOTS // 4 * 0.05
    # the new shard's pod 0 became the fourth master, its pod 1 that master's replica
    assert [node.hostname for node in added] == ["redis-shard-3-0.test", "redis-shard-3-1.test"]
    assert new_master == by_address[added[0].address]
    assert replicated(cluster)["redis-shard-3-1.test"] == "redis-shard-3-0.test"
    for master_id in masters:
        assert sum(1 for entry in view.values() if entry["master"] == master_id) == 1
    with cluster.client() as client:
        assert {key: client.get(key) for key in keys} == keys


def test_a_replica_of_another_shards_master_is_paired_back_with_its_own(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    view = cluster.nodes[0].nodes()
    ids = {entry["hostname"]: key for key, entry in view.items()}
    stray = cluster.nodes[1]  # redis-shard-0-1, the replica of redis-shard-0-0
    # as someone's manual CLUSTER REPLICATE leaves it: two replicas on shard 1's master (and its
    # node), none on shard 0's
    stray.raw("CLUSTER", "REPLICATE", str(ids["redis-shard-1-0.test"]))
    cluster.wait(
        "the stray replica moved",
        lambda: replicated(cluster).get(stray.hostname) == "redis-shard-1-0.test",
        timeout=20,
    )

    result = assert_bootstrapped(cluster)

    assert f"{stray.address} replicates {ids['redis-shard-0-0.test']}, the master of its shard" in result.stderr
    assert replicated(cluster)[stray.hostname] == "redis-shard-0-0.test"
    # and a replica does not wander off on its own: replica migration is off in the rendered redis.conf
    with stray.client() as client:
        assert client.config_get("cluster-allow-replica-migration") == {"cluster-allow-replica-migration": "no"}


def test_a_master_back_without_its_volume_is_forgotten_and_rejoins_its_shard_as_a_replica(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    cluster.write_acknowledged({"{lost}:acked": "yes"})
    victim = cluster.owner("{lost}:acked")
    old_id = next(key for key, entry in victim.nodes().items() if "myself" in entry["flags"])
    shard_pods = {node.hostname for node in cluster.nodes if node.shard == victim.shard}

    victim.stop()
    # the pod is rescheduled on another node: a new IP, an empty volume (no nodes.conf, no AOF)
    for path in victim.dir.iterdir():
        if path.name not in ("run", "redis.log", "rejoin.log"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    cluster.start([victim], first_host=100)
    new_id = next(key for key, entry in victim.nodes().items() if "myself" in entry["flags"])
    assert new_id != old_id

    def healed() -> bool:
        views = [node.nodes() for node in cluster.nodes]
        return (
            all(old_id not in view and len(view) == 6 for view in views)
            and replicated(cluster).get(victim.hostname) in shard_pods
            and all(node.info()["cluster_state"] == "ok" for node in cluster.nodes)
        )

    # no Job runs: the rejoin sidecars forget the old ID and pair the new node with its shard
    cluster.wait("the old ID forgotten, the new node its shard's replica", healed, timeout=60)
    logs = "".join((node.dir / "rejoin.log").read_text() for node in cluster.nodes)
    assert f"forgets {old_id}" in logs
    assert f"{victim.address} replicates" in (victim.dir / "rejoin.log").read_text()
    with cluster.client() as client:
        assert client.get("{lost}:acked") == "yes"
    # the Job, run again, finds it healthy and changes nothing
    result = assert_bootstrapped(cluster)
    assert "replicates" not in result.stderr and "meets" not in result.stderr


def test_a_migration_left_open_is_closed_by_the_next_run(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    cluster.write_acknowledged({"{open}:key": "kept"})
    source = cluster.owner("{open}:key")
    view = source.nodes()
    target_id = next(
        key for key, entry in view.items() if "master" in entry["flags"] and entry["address"] != source.address
    )
    with source.client() as client:
        slot = key_slot(b"{open}:key")
        # as a Job killed half-way through a rebalance leaves it
        client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)

    result = assert_bootstrapped(cluster)

    assert "closing open slots" in result.stderr
    assert "[migrating]" not in source.raw("CLUSTER NODES") and "->-" not in source.raw("CLUSTER NODES")
    with cluster.client() as client:
        assert client.get("{open}:key") == "kept"


def test_the_bootstrap_refuses_a_member_list_that_does_not_fit_the_shape(tmp_path: Path) -> None:
    env = {"REDIS_NODES": "a:6379 b:6379 c:6379 d:6379 e:6379", "REDIS_MASTERS": "3", "REDIS_REPLICAS": "1"}
    result = subprocess.run(
        ["sh", str(SCRIPTS / "cluster-bootstrap.sh")],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.endswith(
        "FAILED: REDIS_NODES lists 5 members; REDIS_MASTERS=3 x (1 + REDIS_REPLICAS=1) needs 6\n"
    )
