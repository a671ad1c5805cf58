"""Benchmark: async jobs through the sample service, with the real API and the real `sample worker`.

Starts, on loopback: a Postgres primary (schema by `sample migrate`), a 3-member NATS JetStream
cluster from the kit's configuration (provisioned by the kit's script), `sample serve` with the job
queue configured, and `sample worker` processes. The job is `order-receipt` of a seeded order.
Measures, in one run:

- submission: POST /jobs -> 202 latency, no worker running (status key + publish, each acknowledged
  by a majority of the cluster);
- drain throughput: `--jobs` queued jobs finished by one worker, then by two (jobs/s from when the
  workers are up, counting the jobs still queued then, and the ratio);
- end to end: POST /jobs until GET /jobs/{id} shows `done`, one job at a time with a worker idle.

Usage: `uv run python bench/sample_jobs.py [--jobs 600] [--single 50]`. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from components.labels import Meta
from components.queue import QueueSpec, job_env
from testsupport.nats import NatsCluster
from testsupport.postgres import PostgresServer
from testsupport.process import LOOPBACK, ServerProcess, free_port

META = Meta(namespace="bench", instance="bench", version="0.1.0")


def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body).encode()
        conn.request(method, path, payload, {"content-type": "application/json"} if payload else {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def healthy(port: int) -> bool:
    try:
        return request(port, "GET", "/healthz")[0] == 200
    except OSError:
        return False


def sample(command: str, env: dict[str, str], log: Path) -> tuple[ServerProcess, int]:
    port = free_port()
    process = ServerProcess(
        [sys.executable, "-m", "sample", command],
        ready=lambda: healthy(port),
        log=log,
        env={"PORT": str(port), "LOG_LEVEL": "warning", **env},
    )
    return process, port


def submit(api: int) -> tuple[str, float]:
    started = time.perf_counter()
    status, job = request(api, "POST", "/jobs", {"kind": "order-receipt", "payload": {"order_id": 1}})
    assert status == 202, job
    return job["id"], (time.perf_counter() - started) * 1000


def wait_done(api: int, job_ids: list[str]) -> None:
    for job_id in job_ids:
        while (state := request(api, "GET", f"/jobs/{job_id}")[1])["status"] == "queued":
            time.sleep(0.005)
        assert state["status"] == "done", state


async def _remaining(cluster: NatsCluster) -> int:
    nc = await nats.connect(servers=cluster.url.split(","))
    try:
        info = await nc.jetstream().consumer_info(cluster.spec.jobs.name, cluster.spec.consumer.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    finally:
        await nc.close()


def drain(api: int, cluster: NatsCluster, env: dict[str, str], tmp: Path, workers: int, jobs: int) -> float:
    """Queue `jobs` jobs, start `workers` workers; jobs/s from when all are up until the last job is done."""
    ids = [submit(api)[0] for _ in range(jobs)]
    processes = [sample("worker", env, tmp / f"drain-{workers}-{i}.log")[0] for i in range(workers)]
    try:
        started = time.perf_counter()
        remaining = asyncio.run(_remaining(cluster))  # jobs left once every worker is up
        while asyncio.run(_remaining(cluster)):  # a job leaves the consumer when acked, after its effect
            time.sleep(0.05)
        rate = remaining / (time.perf_counter() - started)
        wait_done(api, ids)  # every job's status is `done`
        return rate
    finally:
        for process in processes:
            process.stop()


def percentile(values: list[float], share: float) -> float:
    return sorted(values)[min(len(values) - 1, int(share * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=600, help="jobs drained per worker count")
    parser.add_argument("--single", type=int, default=50, help="jobs timed one at a time, end to end")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sample-jobs-"))
    postgres = PostgresServer.primary()
    cluster = NatsCluster(tmp, QueueSpec())
    started: list[ServerProcess] = []
    try:
        dsn = postgres.create_database("sample")
        migrated = subprocess.run([sys.executable, "-m", "sample", "migrate"], env={**os.environ, "DATABASE_URL": dsn})
        assert migrated.returncode == 0
        postgres.sql("INSERT INTO products (sku, name, price_cents, stock) VALUES ('a', 'A', 100, 1000000)", "sample")
        cluster.start()
        cluster.provision()
        env = {item["name"]: item["value"] for item in job_env(META, cluster.spec)}
        env = {**env, "NATS_URL": cluster.url, "DATABASE_URL": dsn}
        api_process, api = sample("serve", env, tmp / "api.log")
        started.append(api_process)
        assert request(api, "POST", "/users", {"email": "b@example.com", "name": "B", "password": "12345678"})[0] == 201
        order = {"user_id": 1, "items": [{"product_id": 1, "quantity": 3}]}
        assert request(api, "POST", "/orders", order)[0] == 201

        submit_ms = [submit(api)[1] for _ in range(args.jobs)]
        worker_process = sample("worker", env, tmp / "drain-warmup.log")[0]  # drain what the timing queued
        wait_done(api, [submit(api)[0]])
        worker_process.stop()
        one = drain(api, cluster, env, tmp, 1, args.jobs)
        two = drain(api, cluster, env, tmp, 2, args.jobs)

        idle_worker = sample("worker", env, tmp / "single.log")[0]
        started.append(idle_worker)
        end_to_end = []
        for _ in range(args.single):
            began = time.perf_counter()
            wait_done(api, [submit(api)[0]])
            end_to_end.append((time.perf_counter() - began) * 1000)
    finally:
        for process in reversed(started):
            process.stop()
        cluster.close()
        postgres.close()

    e2e_p50, submit_p50 = statistics.median(end_to_end), statistics.median(submit_ms)
    rows = [
        ("POST /jobs -> 202, p50 / p99 (ms)", f"{submit_p50:.2f} / {percentile(submit_ms, 0.99):.2f}"),
        ("drain, 1 worker (jobs/s)", f"{one:.0f}"),
        ("drain, 2 workers (jobs/s)", f"{two:.0f}"),
        ("ratio 2 workers / 1 worker", f"{two / one:.2f}"),
        ("submit -> done seen by GET, p50 / p99 (ms)", f"{e2e_p50:.2f} / {percentile(end_to_end, 0.99):.2f}"),
        ("ratio end-to-end p50 / submit p50", f"{e2e_p50 / submit_p50:.2f}"),
    ]
    print(f"\nsample jobs on loopback ({os.cpu_count()} CPUs shared by 3 nats-servers, Postgres, API, workers)\n")
    for label, value in [("measure", "value"), *rows]:
        print(f"{label:<46}{value:>16}")


if __name__ == "__main__":
    main()
