"""Benchmark: job throughput of the queue on a real 3-member cluster, with one and with two workers.

Starts nats-server three times from the generated configuration (loopback routes), provisions the
streams with the kit's script, then for each worker count submits `--jobs` jobs the way the
service does (status key created, job published with its id, both acknowledged by a majority),
starts the workers and times how long they take to drain the queue. The workers are the
reference worker of the integration tests.

Usage: `uv run python bench/nats_jobs.py [--jobs 500]`. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tests.integration.test_nats_queue import Client, Cluster, queue_spec


async def submit(cluster: Cluster, jobs: int) -> tuple[list[str], list[float]]:
    """Submit `jobs` jobs as the service does; return their ids and each submission's latency (ms)."""
    async with Client(cluster) as client:
        ids, latencies = [], []
        for index in range(jobs):
            before = time.perf_counter()
            ids.append(await client.submit({"values": [index, 1]}))
            latencies.append((time.perf_counter() - before) * 1000)
    return ids, latencies


async def drain(cluster: Cluster, ids: list[str]) -> float:
    """Seconds until the consumer has nothing pending or unacknowledged; then every job must be done."""
    async with Client(cluster) as client:
        started = time.perf_counter()
        while True:
            info = await client.js.consumer_info(cluster.spec.jobs.name, cluster.spec.consumer.durable)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - started
        states = await client.wait_finished(ids)
        assert {state["status"] for state in states.values()} == {"done"}
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs per row")
    args = parser.parse_args()
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="nats-bench-")), queue_spec())
    cluster.start()
    rows = []
    try:
        cluster.provision()
        for count in (1, 2):
            ids, latencies = asyncio.run(submit(cluster, args.jobs))
            workers = [cluster.worker(f"bench-{count}-{index}") for index in range(count)]
            seconds = asyncio.run(drain(cluster, ids))
            for worker in workers:
                worker.stop()
            cuts = statistics.quantiles(latencies, n=100, method="inclusive")
            rows.append((count, cuts[49], cuts[98], args.jobs / seconds))
    finally:
        cluster.stop()
    print(f"\n{args.jobs} jobs per row, 3 members, streams and results bucket replicated 3 times\n")
    print("| workers | submit p50 ms | submit p99 ms | jobs done/s (queue drained by the workers) |")
    print("|---------|---------------|---------------|--------------------------------------------|")
    for count, p50, p99, rate in rows:
        print(f"| {count:>7} | {p50:>13.2f} | {p99:>13.2f} | {rate:>42.0f} |")


if __name__ == "__main__":
    main()
