"""Benchmark: how long the kit's Redis Cluster leaves slots unserved after a master is killed,
with the failover-watch sidecar and without it (Redis's own failure detection alone).

Runs the rendered redis.conf, node-start.sh, cluster-rejoin.sh, failover-watch.sh and
cluster-bootstrap.sh with real redis-server processes on loopback (bench/redis_support.py),
3 masters x 1 replica. Each run writes a key acknowledged by WAIT, SIGKILLs its master, and times
until every surviving node reports cluster_state:ok with all 16384 slots and a replica holds the
victim's slots; then the killed node is started again (it rejoins as a replica) and the bootstrap
must find the cluster healthy before the next run. Each run's key (and so the master killed)
differs. Both modes run in the same invocation, one cluster each, for every node timeout.

Target (issue 5): every slot served again within node timeout + 2 s.

Usage: `uv run python bench/redis_failover.py [--runs 5] [--timeouts 5000,2000]`. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

from bench.redis_support import LoopbackCluster
from components.redis import RedisSpec


@dataclass
class Result:
    node_timeout_ms: int
    watch: bool
    times: list[float]
    by_watcher: int
    """Runs in which the replica's failover-watch forced the election (the others: Redis's own)."""

    @property
    def target(self) -> float:
        return self.node_timeout_ms / 1000 + 2

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def measure(node_timeout_ms: int, watch: bool, runs: int) -> Result:
    spec = RedisSpec(enabled=True, mode="cluster", node_timeout_ms=node_timeout_ms, failover_watch=watch)
    cluster = LoopbackCluster(spec)
    try:
        cluster.start()
        times, by_watcher = [], 0
        for run in range(runs):
            result = cluster.bootstrap()
            if result.returncode != 0:
                raise RuntimeError(f"bootstrap failed before run {run}:\n{result.stderr}")
            key = f"{{tag{run}}}:acked"
            cluster.write_acknowledged({key: "yes"})
            logs = {node.hostname: node.watch_log.read_text() if watch else "" for node in cluster.nodes}
            elapsed, victim, replica_id = cluster.fail_over(key)
            successor = next(node for node in cluster.running() if node.id() == replica_id)
            forced = watch and "FORCE: OK" in successor.watch_log.read_text()[len(logs[successor.hostname]) :]
            times.append(elapsed)
            by_watcher += forced
            how = "watcher" if forced else "Redis"
            print(
                f"  node timeout {node_timeout_ms} ms, watcher {'on' if watch else 'off'}, run {run + 1}: "
                f"{elapsed:.2f} s ({how})",
                flush=True,
            )
            victim.start(victim.ip)
        return Result(node_timeout_ms, watch, times, by_watcher)
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeouts", default="5000,2000", help="node timeouts in ms, comma separated")
    args = parser.parse_args()
    results = []
    for node_timeout_ms in (int(value) for value in args.timeouts.split(",")):
        for watch in (False, True):
            results.append(measure(node_timeout_ms, watch, args.runs))
    print()
    print(
        "| node timeout | watcher | runs | min s | median s | max s | target s (timeout + 2) | within target "
        "| median / timeout | promoted by the watcher |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        times = result.times
        print(
            f"| {result.node_timeout_ms} ms | {'on' if result.watch else 'off'} | {len(times)} | {min(times):.2f} | "
            f"{result.median:.2f} | {max(times):.2f} | {result.target:.1f} | "
            f"{sum(1 for value in times if value <= result.target)}/{len(times)} | "
            f"{result.median / (result.node_timeout_ms / 1000):.2f} | "
            f"{f'{result.by_watcher}/{len(times)}' if result.watch else '-'} |"
        )
    print()
    for node_timeout_ms in dict.fromkeys(result.node_timeout_ms for result in results):
        off, on = (
            next(r for r in results if r.node_timeout_ms == node_timeout_ms and r.watch is w) for w in (False, True)
        )
        print(
            f"node timeout {node_timeout_ms} ms: median {off.median:.2f} s -> {on.median:.2f} s with the watcher "
            f"(x{on.median / off.median:.2f}); beyond the node timeout {off.median - node_timeout_ms / 1000:.2f} s -> "
            f"{on.median - node_timeout_ms / 1000:.2f} s"
        )


if __name__ == "__main__":
    main()
