"""Benchmark: how long the kit's Redis Cluster leaves slots unserved after a master is killed.

Runs the rendered redis.conf, node-start.sh, cluster-rejoin.sh and cluster-bootstrap.sh with real
redis-server processes on loopback (bench/redis_support.py), 3 masters x 1 replica. Each run
writes a key acknowledged by WAIT, SIGKILLs its master, and times until every surviving node
reports cluster_state:ok with all 16384 slots and the replica holds the victim's slots; then the
killed node is started again (it rejoins as a replica) and the bootstrap must find the cluster
healthy before the next run. Each run's key (and so the master killed) differs.

Target (issue 5): every slot served again within node timeout + 2 s.

Usage: `uv run python bench/redis_failover.py [--runs 5] [--timeouts 5000,2000]`. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.redis_support import LoopbackCluster
from components.redis import RedisSpec


def measure(node_timeout_ms: int, runs: int, root: Path) -> list[float]:
    cluster = LoopbackCluster(root, RedisSpec(enabled=True, mode="cluster", node_timeout_ms=node_timeout_ms))
    try:
        cluster.start()
        times = []
        for run in range(runs):
            result = cluster.bootstrap()
            if result.returncode != 0:
                raise RuntimeError(f"bootstrap failed before run {run}:\n{result.stderr}")
            key = f"{{tag{run}}}:acked"
            cluster.write_acknowledged({key: "yes"})
            elapsed, victim, _ = cluster.fail_over(key)
            times.append(elapsed)
            print(f"  node timeout {node_timeout_ms} ms, run {run + 1}: {elapsed:.2f} s", flush=True)
            victim.start(victim.ip)
        return times
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeouts", default="5000,2000", help="node timeouts in ms, comma separated")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="redis-failover-") as tmp:
        for node_timeout_ms in (int(value) for value in args.timeouts.split(",")):
            times = measure(node_timeout_ms, args.runs, Path(tmp) / str(node_timeout_ms))
            target = node_timeout_ms / 1000 + 2
            within = sum(1 for value in times if value <= target)
            rows.append((node_timeout_ms, times, target, within))
    print()
    print(
        "| node timeout | runs | min s | median s | max s | target s (timeout + 2) | within target | median / timeout |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for node_timeout_ms, times, target, within in rows:
        print(
            f"| {node_timeout_ms} ms | {len(times)} | {min(times):.2f} | {statistics.median(times):.2f} | "
            f"{max(times):.2f} | {target:.1f} | {within}/{len(times)} | "
            f"{statistics.median(times) / (node_timeout_ms / 1000):.2f} |"
        )


if __name__ == "__main__":
    main()
