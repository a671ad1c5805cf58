"""Benchmark: a scale-out of the kit's Redis Cluster from 3 to 4 masters, with clients reading throughout.

Runs the rendered redis.conf, node-start.sh, cluster-rejoin.sh and cluster-bootstrap.sh with real
redis-server processes on loopback (bench/redis_support.py). Loads `--keys` keys, starts a reader
(one cluster client, random GETs, checking every value) for a baseline, then adds a shard (the
StatefulSet redis-shard-3, two pods) and runs the bootstrap, which makes its pod 0 a master, its
pod 1 that master's replica, and moves slots (with their keys) to the new master. Measures, in
one run: bootstrap time, slots and keys moved, and the reader's throughput and failed reads
before and during it.

Usage: `uv run python bench/redis_rebalance.py [--keys 50000]`. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from bench.redis_support import LoopbackCluster, slot_count
from components.redis import RedisSpec


@dataclass
class Reads:
    ok: int = 0
    wrong: int = 0
    failed: Counter[str] = field(default_factory=Counter)


def read_until(cluster: LoopbackCluster, keys: int, stop: threading.Event, reads: Reads) -> None:
    """Random GETs through one cluster client (it follows MOVED/ASK) until `stop` is set; failures by type."""
    with cluster.client() as client:
        while not stop.is_set():
            index = random.randrange(keys)
            try:
                value = client.get(f"item:{index}")
            except Exception as error:  # every failure a client would see, counted by type
                reads.failed[type(error).__name__] += 1
                continue
            if value == f"value-{index}":
                reads.ok += 1
            else:
                reads.wrong += 1


def phase(cluster: LoopbackCluster, keys: int, work: object) -> tuple[float, Reads]:
    """Run `work()` (or sleep 3 s) while reading; seconds taken and the reads counted meanwhile."""
    stop, reads = threading.Event(), Reads()
    reader = threading.Thread(target=read_until, args=(cluster, keys, stop, reads))
    reader.start()
    start = time.monotonic()
    try:
        work()  # type: ignore[operator]
    finally:
        elapsed = time.monotonic() - start
        stop.set()
        reader.join()
    return elapsed, reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=50000)
    args = parser.parse_args()
    cluster = LoopbackCluster(RedisSpec(enabled=True, mode="cluster"))
    try:
        cluster.start()
        if cluster.bootstrap().returncode != 0:
            raise RuntimeError("bootstrap of 3 x 1 failed")
        with cluster.client() as client, client.pipeline(transaction=False) as pipe:
            for index in range(args.keys):
                pipe.set(f"item:{index}", f"value-{index}")
                if index % 1000 == 999:
                    pipe.execute()
            pipe.execute()
        base_time, base = phase(cluster, args.keys, lambda: time.sleep(3))
        added = cluster.grow(replace(cluster.spec, masters=4))
        outcome = {}

        def scale_out() -> None:
            outcome["result"] = cluster.bootstrap()

        took, during = phase(cluster, args.keys, scale_out)
        if outcome["result"].returncode != 0:
            raise RuntimeError(f"bootstrap of 4 x 1 failed:\n{outcome['result'].stderr}")
        masters = cluster.masters()
        new_master = next(node for node in added if node.address in {m["address"] for m in masters.values()})
        slots = next(slot_count(m["slots"]) for m in masters.values() if m["address"] == new_master.address)
        with new_master.client() as direct:
            moved_keys = direct.dbsize()
    finally:
        cluster.close()
    print()
    print(
        "| keys | bootstrap s | slots moved | keys moved | reads/s before | reads/s during | failed reads during "
        "| wrong values |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.keys} | {took:.2f} | {slots} ({slots / 16384:.0%}) | {moved_keys} ({moved_keys / args.keys:.0%}) | "
        f"{base.ok / base_time:,.0f} | {during.ok / took:,.0f} ({during.ok / took / (base.ok / base_time):.2f}x) | "
        f"{sum(during.failed.values())} {dict(during.failed) or ''} | {base.wrong + during.wrong} |"
    )


if __name__ == "__main__":
    main()
