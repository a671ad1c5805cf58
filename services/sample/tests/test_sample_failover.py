"""The read/write split through a failover, against real Postgres servers of their own (each test stops,
demotes or promotes its primary, so none shares the session's): while the primary is down or read-only,
what needs it answers 503 `database_unavailable` with Retry-After within a bounded time (never a 500),
other reads keep coming from the replica, nothing is written to a read-only server, and once a writable
primary is back the same process writes again through freshly made connections."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sample_helpers import DATABASE, Client, Reply, Service, run_sample

from testsupport.postgres import UID, PostgresServer
from testsupport.process import eventually, owned_by

pytestmark = pytest.mark.integration

BOUND_SECONDS = 10.0
"""Far above what a 503 takes (milliseconds when connections are refused, ACQUIRE_TIMEOUT_SECONDS when the
server does not answer); only proves a request does not hang on an unavailable primary."""
APP_CONNECTIONS = "SELECT pid FROM pg_stat_activity WHERE application_name = 'scaleladder-sample' ORDER BY pid"


@pytest.fixture
def primary() -> Iterator[PostgresServer]:
    """A primary of its own with the `sample` database migrated."""
    server = PostgresServer.primary()
    try:
        server.create_database(DATABASE)
        migrated = run_sample("migrate", {"DATABASE_URL": server.dsn(DATABASE)})
        assert migrated.returncode == 0, migrated.stderr
        yield server
    finally:
        server.close()


@pytest.fixture
def replica(primary: PostgresServer) -> Iterator[PostgresServer]:
    server = primary.replica()
    yield server
    server.close()


def product(n: int) -> dict[str, Any]:
    return {"sku": f"sku-{n}", "name": f"Product {n}", "price_cents": 100, "stock": 10}


def timed(send: Any, *args: Any) -> Reply:
    started = time.monotonic()
    reply: Reply = send(*args)
    assert time.monotonic() - started < BOUND_SECONDS, f"answered after {time.monotonic() - started:.1f}s"
    return reply


def assert_unavailable(reply: Reply, reason: str) -> str:
    assert reply.status == 503, reply.body
    assert reply.header("retry-after") == "1"
    error = reply.json()["error"]
    assert (error["status"], error["code"]) == (503, "database_unavailable"), error
    assert reason in error["message"], error
    assert "postgresql://" not in error["message"]
    message: str = error["message"]
    return message


def count(server: PostgresServer, table: str) -> int:
    return int(server.sql(f"SELECT count(*) FROM {table}", DATABASE))


def no_500(client: Client) -> None:
    assert client.metric("http_requests_total", status="500") == 0


def test_while_the_primary_is_stopped_writes_are_503_and_after_it_starts_they_succeed(
    primary: PostgresServer, replica: PostgresServer
) -> None:
    service = Service(
        {
            "DATABASE_URL": primary.dsn(DATABASE),
            "DATABASE_REPLICA_URLS": replica.dsn(DATABASE),
            "READ_YOUR_WRITES_SECONDS": "120",
        }
    )
    try:
        writer, reader = service.client(), service.client()
        assert writer.post("/users", {"email": "a@example.com", "name": "A", "password": "long enough"}).status == 201
        assert writer.post("/products", product(1)).status == 201
        primary.wait_replayed(replica)
        primary.stop()
        try:
            writes = [
                ("POST", "/products", product(2)),
                ("PATCH", "/products/1", {"name": "Renamed"}),
                ("POST", "/users", {"email": "b@example.com", "name": "B", "password": "long enough"}),
                ("POST", "/orders", {"user_id": 1, "items": [{"product_id": 1, "quantity": 1}]}),
            ]
            for method, path, body in writes:
                message = assert_unavailable(timed(writer.request, method, path, body), "refused the connection")
                assert "nothing was written" in message
            # other reads come from the replica; the writer's read-your-writes reads need the primary
            assert timed(reader.get, "/products/1").json()["name"] == "Product 1"
            assert_unavailable(timed(writer.get, "/products/1"), "refused the connection")
            assert_unavailable(timed(writer.get, "/users/1"), "refused the connection")
            ready = timed(writer.get, "/readyz")
            assert ready.status == 503 and ready.json()["checks"]["postgres"].startswith("down: ")
        finally:
            primary.start()
        # the same process, no restart: the first write after the restart succeeds
        assert writer.post("/products", product(2)).status == 201
        assert writer.patch("/products/1", {"name": "Renamed"}).json()["name"] == "Renamed"
        assert writer.post("/orders", {"user_id": 1, "items": [{"product_id": 1, "quantity": 1}]}).status == 201
        assert writer.get("/readyz").status == 200
        assert (count(primary, "products"), count(primary, "orders")) == (2, 1)
        no_500(writer)
    finally:
        service.stop()


def test_a_primary_restarted_as_a_standby_gets_no_write_until_promoted(primary: PostgresServer) -> None:
    """What Patroni does to the old primary: it comes back read-only (a standby); the pool's connections to
    it were closed, and new ones are refused as not writable, so nothing is even sent."""
    service = Service({"DATABASE_URL": primary.dsn(DATABASE)})
    try:
        client = service.client()
        assert client.post("/products", product(1)).status == 201
        primary.stop()
        _standby_signal(primary)
        primary.start()
        assert primary.sql("SELECT pg_is_in_recovery()") == "t"
        for attempt in range(3):
            assert_unavailable(timed(client.post, "/products", product(2 + attempt)), "read-only")
        assert_unavailable(timed(client.patch, "/products/1", {"name": "Renamed"}), "read-only")
        ready = client.get("/readyz")
        assert ready.status == 503 and ready.json()["checks"]["postgres"].startswith("down: "), ready.body
        assert count(primary, "products") == 1
        assert primary.sql("SELECT pg_promote()") == "t"
        assert client.post("/products", product(2)).status == 201
        assert client.get("/readyz").status == 200
        assert count(primary, "products") == 2
        no_500(client)
    finally:
        service.stop()


def _standby_signal(server: PostgresServer) -> None:
    """The file that makes a stopped server start as a standby (it removes it itself when promoted)."""
    path = server.data / "standby.signal"
    path.touch()
    owned_by(UID, path, 0o600)


def test_a_pooled_connection_to_a_server_turned_read_only_is_dropped_and_the_pool_reconnects(
    primary: PostgresServer,
) -> None:
    """A connection that stays open while its server stops taking writes (ALTER SYSTEM
    default_transaction_read_only, as a pooler's server connection to a demoted primary would): the write
    on it is a 503, that connection is closed, and once the server is writable a new one writes."""
    service = Service({"DATABASE_URL": primary.dsn(DATABASE), "DB_POOL_MIN": "1", "DB_POOL_MAX": "1"})
    try:
        client = service.client()
        assert client.post("/products", product(1)).status == 201
        [pooled] = primary.sql(APP_CONNECTIONS).split()
        primary.sql("ALTER SYSTEM SET default_transaction_read_only = on")
        primary.sql("SELECT pg_reload_conf()")
        assert eventually(lambda: primary.sql("SHOW default_transaction_read_only") == "on")
        message = assert_unavailable(timed(client.post, "/products", product(2)), "read-only")
        assert "nothing was written" in message
        assert eventually(lambda: pooled not in primary.sql(APP_CONNECTIONS).split())  # not handed out again
        # still read-only: a new connection is refused before anything is sent
        assert_unavailable(timed(client.post, "/products", product(2)), "read-only")
        assert client.get("/readyz").status == 503
        assert count(primary, "products") == 1
        primary.sql("ALTER SYSTEM RESET default_transaction_read_only")
        primary.sql("SELECT pg_reload_conf()")
        assert eventually(lambda: primary.sql("SHOW default_transaction_read_only") == "off")
        assert client.post("/products", product(2)).status == 201
        assert pooled not in primary.sql(APP_CONNECTIONS).split()
        assert count(primary, "products") == 2
        no_500(client)
    finally:
        service.stop()


def _processes(server: PostgresServer) -> list[int]:
    """The server's postmaster and every process under it."""
    assert server.process is not None
    found, queue = [], [server.process.proc.pid]
    while queue:
        pid = queue.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            queue += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_an_unresponsive_primary_answers_503_within_the_bounds(primary: PostgresServer) -> None:
    """A primary that takes TCP connections but answers nothing (a frozen or partitioned node: the kernel
    still completes the handshake): the statement on a pooled connection times out (statement timeout +
    1 s), a new connection within the acquire timeout; neither is waited for twice."""
    service = Service({"DATABASE_URL": primary.dsn(DATABASE), "DB_STATEMENT_TIMEOUT_MS": "1000"})
    frozen: list[int] = []
    try:
        client = service.client()
        assert client.post("/products", product(1)).status == 201
        frozen = _processes(primary)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        assert_unavailable(timed(client.post, "/products", product(2)), "did not answer in time")
        assert_unavailable(timed(client.post, "/products", product(2)), "no connection within 5 s")
        assert timed(client.get, "/readyz").status == 503
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        frozen = []
        assert client.post("/products", product(2)).status == 201
        assert count(primary, "products") == 2
        no_500(client)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        service.stop()
