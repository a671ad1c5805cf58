"""Process lifecycle: idempotent migrations as a command, and graceful shutdown on SIGTERM
(stop accepting, end event streams, finish in-flight requests, close pools)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sample_helpers import EventStream, Postgres, Reply, Service, run_sample, seed_products

from testsupport.postgres import postgres_binary
from testsupport.process import LOOPBACK, port_open
from testsupport.redis import RedisServer


def test_migrate_is_idempotent(postgres: Postgres) -> None:
    dsn = postgres.primary.create_database("fresh_migrate")
    first = run_sample("migrate", {"DATABASE_URL": dsn})
    second = run_sample("migrate", {"DATABASE_URL": dsn})
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert '"applied":[1]' in first.stderr
    assert '"applied":[]' in second.stderr
    assert postgres.primary.sql("SELECT count(*) FROM schema_migrations", "fresh_migrate") == "1"


def test_migrate_fails_when_the_database_is_unreachable() -> None:
    result = run_sample("migrate", {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.returncode != 0
    assert "Connect call failed" in result.stderr or "refused" in result.stderr


@pytest.mark.usefixtures("clean")
def test_sigterm_drains_in_flight_requests_and_ends_streams(postgres: Postgres, redis_server: RedisServer) -> None:
    seed_products(postgres, 1)
    service = Service({"DATABASE_URL": postgres.dsn, "REDIS_URL": redis_server.url, "EVENTS_ENABLED": "true"})
    client = service.client()
    assert client.post("/users", {"email": "d@example.com", "name": "D", "password": "password1"}).status == 201
    # Another session holds the product row: an order for it waits on the lock, in flight.
    locker = subprocess.Popen(
        [postgres_binary("psql"), "-X", "-q", "-At", "-d", postgres.dsn],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdin is not None and locker.stdout is not None
    locker.stdin.write("BEGIN;\nSELECT id FROM products WHERE id = 1 FOR UPDATE;\n")
    locker.stdin.flush()
    assert locker.stdout.readline().strip() == "1"
    stream = EventStream(service.port)
    stream.next()
    with ThreadPoolExecutor(1) as pool:
        order = pool.submit(client.post, "/orders", {"user_id": 1, "items": [{"product_id": 1, "quantity": 2}]})
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        deadline = time.monotonic() + 10
        while postgres.sql(waiting) != "1" and time.monotonic() < deadline:
            time.sleep(0.05)
        service.terminate()
        assert stream.next() == {}  # the event stream ends instead of holding the shutdown open
        deadline = time.monotonic() + 10
        while port_open(service.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not port_open(service.port)  # no new connections...
        time.sleep(1.0)
        assert service.proc.poll() is None  # ...while the order is still being served
        locker.communicate("COMMIT;\n", timeout=10)
        reply: Reply = order.result(timeout=20)
    assert reply.status == 201, reply.body
    service.stop()
    log = service.output()
    assert "Application shutdown complete" in log
    assert log.index("Waiting for connections to close") < log.index("Application shutdown complete")
    assert postgres.sql("SELECT stock FROM products WHERE id = 1") == "998"


def test_two_workers_share_the_port_and_report_metrics_together(postgres: Postgres) -> None:
    service = Service({"DATABASE_URL": postgres.dsn, "WEB_CONCURRENCY": "2"})
    try:
        client = service.client()
        for _ in range(40):
            assert client.get("/openapi.json").status == 200
        # Whichever worker answers /metrics, it reports the requests both workers served. A request is
        # counted just after its response is sent, so the other worker may see the last one a moment later.
        deadline = time.monotonic() + 5
        while client.metric("http_requests_total", route="/openapi.json") < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.metric("http_requests_total", route="/openapi.json") == 40
        workers = Path(f"/proc/{service.proc.pid}/task/{service.proc.pid}/children").read_text().split()
        spawned = [w for w in workers if b"spawn_main" in Path(f"/proc/{w}/cmdline").read_bytes()]
        assert len(spawned) == 2
    finally:
        assert service.stop() == 0


def test_a_port_already_taken_ends_the_process_instead_of_hanging_in_shutdown(postgres: Postgres) -> None:
    """The bind fails right after start-up, while the event listener still waits for Redis (here a port that
    accepts and never answers): redis-py loses the cancellation then, and the shutdown used to wait forever."""
    taken, silent_redis = socket.socket(), socket.socket()
    for sock in (taken, silent_redis):
        sock.bind((LOOPBACK, 0))
        sock.listen()
    env = {
        **os.environ,
        "DATABASE_URL": postgres.dsn,
        "REDIS_URL": f"redis://{LOOPBACK}:{silent_redis.getsockname()[1]}",
        "EVENTS_ENABLED": "true",
        "LISTEN_ADDRESS": LOOPBACK,
        "PORT": str(taken.getsockname()[1]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sample", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"sample serve still running 60 s after its bind failed:\n{output.decode()[-2000:]}")
    finally:
        taken.close()
        silent_redis.close()
    assert proc.returncode == 3, output.decode()[-2000:]  # uvicorn's start-up failure
    assert b"address already in use" in output
