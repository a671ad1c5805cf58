"""Helpers for the phase-6 tests: the service run in a role (`sample serve` / `sample worker`) as a
ServerProcess on a chosen or free port, the job protocol's environment, and NATS reads of the results."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import nats
import psycopg
from sample_helpers import Client

from components.labels import Meta
from components.queue import job_env
from testsupport.nats import NatsCluster
from testsupport.process import ServerProcess, free_port

# short ack wait and few deliveries, so redelivery and dead-lettering happen within seconds
QUEUE_OVERRIDES = {"consumer": {"ack_wait_seconds": 2, "max_deliver": 3}}
META = Meta(namespace="phase6", instance="phase6", version="0.1.0")


def jobs_env(cluster: NatsCluster) -> dict[str, str]:
    """The env the kit gives the API and worker roles (`components.queue.job_env`), NATS on loopback."""
    env = {item["name"]: item["value"] for item in job_env(META, cluster.spec)}
    return {**env, "NATS_URL": cluster.url, "JOBS_RETRY_DELAY_MS": "200"}


def _healthy(port: int) -> bool:
    try:
        return Client(port).get("/healthz").status == 200
    except OSError:
        return False


def start(command: str, env: dict[str, str], log: Path, port: int | None = None) -> tuple[ServerProcess, Client]:
    """`sample <command>` (serve or worker) with `env`, healthy on PORT before it returns."""
    port = port or free_port()
    process = ServerProcess(
        [sys.executable, "-m", "sample", command],
        ready=lambda: _healthy(port),
        log=log,
        env={"PORT": str(port), "COOKIE_SECURE": "false", "SHUTDOWN_TIMEOUT_SECONDS": "10", **env},
    )
    return process, Client(port)


def wait_for_log(process: ServerProcess, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.log.read_text(errors="replace"):
        assert process.running, f"{process.argv} exited: {process.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{text!r} not logged in {timeout}s"
        time.sleep(0.05)


def wait_finished(client: Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """GET /jobs/{id} until its status is no longer `queued`."""
    deadline = time.monotonic() + timeout
    while True:
        reply = client.get(f"/jobs/{job_id}")
        assert reply.status == 200, reply.body
        state: dict[str, Any] = reply.json()
        if state["status"] != "queued":
            return state
        assert time.monotonic() < deadline, f"job {job_id} still queued after {timeout}s"
        time.sleep(0.1)


def history(cluster: NatsCluster, job_id: str) -> list[dict[str, Any]]:
    """Every revision of a job's status record in the results bucket, oldest first."""

    async def read() -> list[dict[str, Any]]:
        nc = await nats.connect(servers=cluster.url.split(","))
        try:
            kv = await nc.jetstream().key_value(cluster.spec.results.bucket)
            return [json.loads(entry.value or b"{}") for entry in await kv.history(job_id)]
        finally:
            await nc.close()

    return asyncio.run(read())


def dead_letters(cluster: NatsCluster) -> list[Any]:
    """The messages in the dead-letter stream (subject, headers, data)."""

    async def read() -> list[Any]:
        nc = await nats.connect(servers=cluster.url.split(","))
        try:
            js = nc.jetstream()
            state = (await js.stream_info(cluster.spec.dead_letters.name)).state
            if not state.messages:
                return []
            name = cluster.spec.dead_letters.name
            return [await js.get_msg(name, seq) for seq in range(state.first_seq, state.last_seq + 1)]
        finally:
            await nc.close()

    return asyncio.run(read())


class TableLock:
    """Holds ACCESS EXCLUSIVE on a table in an open transaction: a job reading it blocks until `release()`."""

    def __init__(self, dsn: str, table: str) -> None:
        self.conn = psycopg.connect(dsn)
        self.conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()
