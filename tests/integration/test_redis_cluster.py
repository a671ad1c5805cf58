"""The kit's Redis Cluster, for real: rendered redis.conf, node-start.sh, cluster-bootstrap.sh,
cluster-rejoin.sh and failover-watch.sh run against redis-server processes on loopback, each node
with its rejoin and failover-watch sidecars, standing in for a pod (its own 127.x.y.z address, a
stable announced hostname, its own directory as volume): see bench/redis_support.py. The timings
printed are for information; bench/redis_failover.py measures.

Not made real here: a master that only its replica cannot reach (a network partition between two
nodes). Loopback has no way to cut one pair of addresses apart without packet filtering (root,
iptables/nftables); the watcher leaves such a master alone by the same quorum check as
`test_no_failover_without_a_quorum_of_masters`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from bench.redis_support import SLOTS, LoopbackCluster, Node, slot_count
from components.redis import RUN_AS, SCRIPTS, RedisSpec
from testsupport.process import real_uid, write_secret

pytestmark = pytest.mark.integration

SPEC = RedisSpec(enabled=True, mode="cluster", node_timeout_ms=2000)
FORCE = "CLUSTER FAILOVER FORCE"


@pytest.fixture
def make_cluster() -> Iterator[object]:
    clusters: list[LoopbackCluster] = []

    def make(spec: RedisSpec = SPEC) -> LoopbackCluster:
        cluster = LoopbackCluster(spec)
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


def forced(node: Node) -> bool:
    """Whether the node's failover-watch ran CLUSTER FAILOVER FORCE."""
    return FORCE in node.watch_log.read_text()


def replication(node: Node) -> dict[str, str]:
    return dict(line.split(":", 1) for line in node.raw("INFO replication").splitlines() if ":" in line)


def replicates(node: Node, master: Node) -> bool:
    """`node` is a replica of `master` with its replication link up."""
    info = replication(node)
    return (info["role"], info.get("master_host"), info.get("master_link_status")) == ("slave", master.ip, "up")


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
    # the password from the Secret's file is required
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(cluster.nodes[0].ip, cluster.port).ping()
    # every process runs as the pods' uid (no user entry), as it does in the pod
    node = cluster.nodes[0]
    processes = [node.process, node.sidecar, node.watcher]
    if os.geteuid() == 0:
        assert {real_uid(process.proc.pid) for process in processes if process is not None} == {RUN_AS}
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


def test_without_the_watcher_redis_promotes_the_replica_of_a_killed_master(make_cluster) -> None:
    cluster = make_cluster(replace(SPEC, failover_watch=False))
    assert_bootstrapped(cluster)
    assert all(node.watcher is None for node in cluster.nodes)
    cluster.write_acknowledged({"{failover}:acked": "yes"})

    elapsed, victim, replica_id = cluster.fail_over("{failover}:acked")

    print(
        f"\nRedis alone: every slot served again {elapsed:.2f} s after SIGKILL (node timeout {SPEC.node_timeout_ms} ms)"
    )
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


def test_the_watcher_promotes_the_replica_of_a_killed_master(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    cluster.write_acknowledged({"{watch}:acked": "yes"})
    victim = cluster.owner("{watch}:acked")
    (replica,) = cluster.replicas(victim)

    elapsed, _, replica_id = cluster.fail_over("{watch}:acked")

    print(f"\nwatcher: every slot served again {elapsed:.2f} s after SIGKILL (node timeout {SPEC.node_timeout_ms} ms)")
    assert replica_id == replica.id()
    # the replica's watcher forced the election while it was still a replica (FORCE fails on a
    # master): both other masters confirmed, and the node accepted the forced failover
    log = replica.watch_log.read_text()
    assert "by 2 of 3 masters (quorum 2)" in log and f"{FORCE}: OK" in log, log
    assert "Forced failover user request accepted" in (replica.dir / "redis.log").read_text()
    # no other node's watcher acted: masters only read their role, other replicas' masters answer
    assert [node.hostname for node in cluster.nodes if forced(node)] == [replica.hostname]
    with cluster.client() as client:
        assert client.get("{watch}:acked") == "yes"
    # the killed pod comes back as the new master's replica
    victim.start(victim.ip)
    cluster.wait("rejoined as a replica", lambda: replicates(victim, replica), timeout=20)


@pytest.mark.parametrize("outage", ["restarted", "paused"])
def test_a_master_down_for_less_than_the_node_timeout_keeps_its_slots(make_cluster, outage: str) -> None:
    spec = replace(SPEC, node_timeout_ms=4000)
    cluster = make_cluster(spec)
    assert_bootstrapped(cluster)
    cluster.write_acknowledged({"{blip}:acked": "yes"})
    victim = cluster.owner("{blip}:acked")
    (replica,) = cluster.replicas(victim)
    before = {key: entry["slots"] for key, entry in cluster.masters().items()}
    timeout = spec.node_timeout_ms / 1000

    # out for 60% of the node timeout: its container restarted by the kubelet (same address, its
    # AOF reloaded), or the server blocked (stopped, its connections open)
    if outage == "restarted":
        victim.process.kill()  # type: ignore[union-attr]
        time.sleep(0.6 * timeout)
        victim.start(victim.ip)
    else:
        victim.pause()
        time.sleep(0.6 * timeout)
        victim.resume()
    # longer than any failover, the watcher's or Redis's, would take to start
    time.sleep(timeout)

    cluster.wait("every node ok", lambda: all(node.info()["cluster_state"] == "ok" for node in cluster.nodes), 10)
    assert {key: entry["slots"] for key, entry in cluster.masters().items()} == before
    cluster.wait("its replica follows it again", lambda: replicates(replica, victim), timeout=30)
    assert not any(forced(node) for node in cluster.nodes)
    with cluster.client() as client:
        assert client.get("{blip}:acked") == "yes"
    # its last PONG may be up to half a node timeout older than the outage: then the masters had not
    # heard from it for longer than the node timeout, and the watcher saw it had been out for less
    log = replica.watch_log.read_text()
    print(f"\n{outage} for {0.6 * timeout:.1f} s: " + ("the watcher waited: " + log if log else "not suspected"))


def test_no_failover_without_a_quorum_of_masters(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    cluster.write_acknowledged({"{quorum}:acked": "yes"})
    victim = cluster.owner("{quorum}:acked")
    victim_id = victim.id()
    (replica,) = cluster.replicas(victim)
    by_address = {node.address: node for node in cluster.nodes}
    blocked = next(by_address[str(e["address"])] for e in cluster.masters().values() if e["address"] != victim.address)

    # a second master blocked: only the third can confirm the victim is gone, 1 of 3 (quorum 2)
    blocked.pause()
    victim.process.kill()  # type: ignore[union-attr]
    cluster.wait(
        "the watcher finds no quorum",
        lambda: (
            f"master {victim_id}" in replica.watch_log.read_text()
            and "by only 1 of 3 masters (quorum 2)" in replica.watch_log.read_text()
        ),
        timeout=30,
    )
    assert not forced(replica)
    assert replication(replica)["role"] == "slave"

    # the blocked master answers again and confirms: the replica takes over (the watcher or Redis)
    blocked.resume()
    cluster.wait(
        "the replica took over",
        lambda: (
            replication(replica)["role"] == "master"
            and all(node.info()["cluster_state"] == "ok" for node in cluster.running())
        ),
        timeout=30,
    )
    with cluster.client() as client:
        assert client.get("{quorum}:acked") == "yes"


def test_of_two_replicas_only_the_best_takes_over(make_cluster) -> None:
    cluster = make_cluster(replace(SPEC, replicas_per_master=2))
    assert_bootstrapped(cluster)
    cluster.write_acknowledged({"{best}:acked": "yes"})
    victim = cluster.owner("{best}:acked")
    replicas = cluster.replicas(victim)
    assert len(replicas) == 2

    def offsets() -> dict[str, int]:
        return {node.id(): int(replication(node)["slave_repl_offset"]) for node in replicas}

    master_offset = int(replication(victim)["master_repl_offset"])
    cluster.wait("both replicas caught up", lambda: set(offsets().values()) == {master_offset}, timeout=30)
    # the same offset: the lower node ID is the best
    best, other = sorted(replicas, key=lambda node: node.id())

    _, _, replica_id = cluster.fail_over("{best}:acked")

    # only the best replica's watcher forces an election; the other leaves it to that one
    assert forced(best)
    assert not forced(other)
    # The best wins unless Redis's own election (either replica: their offsets are equal) gets its
    # votes first, which a loaded machine sometimes sees: both are valid, one takes over.
    assert replica_id in {best.id(), other.id()}
    winner, loser = (best, other) if replica_id == best.id() else (other, best)
    # Redis points the other replica at the new master
    cluster.wait("the other replica follows the new master", lambda: replicates(loser, winner), timeout=20)
    with cluster.client() as client:
        assert client.get("{best}:acked") == "yes"
    print(f"\nthe other replica's watcher: {other.watch_log.read_text() or 'nothing to do'}")


def test_a_replica_whose_data_is_too_old_is_not_promoted(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    victim = cluster.owner("{stale}:key")
    (replica,) = cluster.replicas(victim)
    # Redis promotes a replica only if it lost its master at most repl-ping-replica-period + node
    # timeout x cluster-replica-validity-factor ago, the node timeout not counted: 1 + 2 s here.
    # CLUSTER FAILOVER FORCE skips that rule; the watcher keeps it.
    with replica.client() as client:
        client.config_set("repl-ping-replica-period", 1)
        client.config_set("cluster-replica-validity-factor", 1)
        client.config_set("masterauth", "wrong")  # its replication link cannot come back
    with victim.client() as client:
        client.client_kill_filter(_type="replica")
    cluster.wait("the replica lost its master", lambda: replication(replica)["master_link_status"] == "down", 10)
    time.sleep(4)  # with the node timeout the watcher waits, its data is over 3 s too old

    victim.process.kill()  # type: ignore[union-attr]
    cluster.wait("the watcher refused", lambda: "may not take over" in replica.watch_log.read_text(), timeout=30)
    # Redis refuses too, once the master is flagged failing
    cluster.wait(
        "Redis refused",
        lambda: "Disconnected from master for longer than allowed" in (replica.dir / "redis.log").read_text(),
        timeout=30,
    )
    assert not forced(replica)
    assert replication(replica)["role"] == "slave"


def test_a_replica_configured_never_to_fail_over_is_not_promoted(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    victim = cluster.owner("{never}:key")
    victim_id = victim.id()
    (replica,) = cluster.replicas(victim)
    # cluster-replica-no-failover: Redis never promotes it on its own; CLUSTER FAILOVER FORCE would
    with replica.client() as client:
        client.config_set("cluster-replica-no-failover", "yes")

    victim.process.kill()  # type: ignore[union-attr]
    cluster.wait("the watcher refused", lambda: "may not take over" in replica.watch_log.read_text(), timeout=30)
    # Redis flags the master failed and leaves it so
    cluster.wait("the master flagged failed", lambda: "fail" in replica.nodes()[victim_id]["flags"], timeout=30)
    assert not forced(replica)
    assert replication(replica)["role"] == "slave"


def test_a_master_stopped_by_kubernetes_hands_its_slots_over_first(make_cluster) -> None:
    cluster = make_cluster()
    assert_bootstrapped(cluster)
    cluster.write_acknowledged({"{handover}:acked": "yes"})
    victim = cluster.owner("{handover}:acked")
    env = {**cluster.env(), "REDIS_SELF": victim.address}

    start = time.monotonic()
    result = cluster.script("node-stop.sh", env, timeout=30)
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
        again = cluster.script("node-stop.sh", env, timeout=30)
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
    own_master = f"{stray.address} replicates {ids['redis-shard-0-0.test']}, the master of its shard"

    def stray_to_shard_1() -> None:
        # as someone's manual CLUSTER REPLICATE leaves it: two replicas on shard 1's master (and
        # its node), none on shard 0's
        stray.raw("CLUSTER", "REPLICATE", str(ids["redis-shard-1-0.test"]))

    def back_home() -> bool:
        return replicated(cluster).get(stray.hostname) == "redis-shard-0-0.test"

    # the bootstrap Job pairs it back (its rejoin sidecar stopped, so that the Job finds it astray)
    assert stray.sidecar is not None
    stray.sidecar.stop()
    stray_to_shard_1()
    cluster.wait(
        "the stray replica moved",
        lambda: replicated(cluster).get(stray.hostname) == "redis-shard-1-0.test",
        timeout=20,
    )
    result = assert_bootstrapped(cluster)
    assert own_master in result.stderr
    assert back_home()

    # and so does its rejoin sidecar, within a round, without a Job
    stray.start_sidecar()
    stray_to_shard_1()
    cluster.wait("paired back by the sidecar", lambda: own_master in (stray.dir / "rejoin.log").read_text(), 20)
    cluster.wait("back with its own shard's master", back_home, timeout=20)

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
        if path.name != "run" and path.suffix != ".log":
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


def bootstrap_alone(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPTS / "cluster-bootstrap.sh")],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_bootstrap_refuses_a_member_list_that_does_not_fit_the_shape(tmp_path: Path) -> None:
    env = {"REDIS_NODES": "a:6379 b:6379 c:6379 d:6379 e:6379", "REDIS_MASTERS": "3", "REDIS_REPLICAS": "1"}
    password = write_secret(tmp_path / "password", "p", RUN_AS)
    result = bootstrap_alone({**env, "REDIS_PASSWORD_FILE": str(password)})
    assert result.returncode == 1
    assert result.stderr.endswith(
        "FAILED: REDIS_NODES lists 5 members; REDIS_MASTERS=3 x (1 + REDIS_REPLICAS=1) needs 6\n"
    )


def test_the_scripts_refuse_to_run_without_the_password_file(tmp_path: Path) -> None:
    env = {"REDIS_NODES": "a:6379", "REDIS_MASTERS": "1", "REDIS_REPLICAS": "0"}
    unset = bootstrap_alone(env)
    assert unset.returncode != 0 and "REDIS_PASSWORD_FILE: file holding the password" in unset.stderr
    missing = bootstrap_alone({**env, "REDIS_PASSWORD_FILE": str(tmp_path / "absent")})
    assert missing.returncode != 0 and "absent: No such file" in missing.stderr
