"""The error mapping of a Postgres failover, without servers: each error class a failover raises becomes a
503 `database_unavailable` with Retry-After (never a 500), every other error stays what it was; a failed
connection is closed and the pool's others are replaced; only what ran before the caller's statements is
tried again, never a COMMIT. The requests go through the real app (routes, handlers) to scripted pools."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from asyncpg.exceptions import TargetServerAttributeNotMatched
from sample import failover
from sample.app import create_app
from sample.config import Settings
from sample.db import Replica, read_write_unless_set
from starlette.requests import Request

DSN = "postgresql://app:hunter2@db.internal:5432/app"
ROW = {
    "id": 1,
    "sku": "sku-1",
    "name": "Product 1",
    "description": "",
    "price_cents": 100,
    "stock": 5,
    "version": 1,
    "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
}
NEW_PRODUCT = {"sku": "sku-1", "name": "Product 1", "price_cents": 100}

# Every error a failover raises, the words the 503 gives for it, and whether the server is a read-only one.
FAILOVER_ERRORS = [
    (ConnectionRefusedError(111, "Connect call failed ('10.0.0.5', 5432)"), "refused the connection", False),
    (ConnectionResetError(104, "Connection reset by peer"), "connection was reset", False),
    (BrokenPipeError(32, "Broken pipe"), "connection was reset", False),
    (socket.gaierror(-2, "Name or service not known"), "host name did not resolve", False),
    (OSError(113, "No route to host"), "network failed (OSError)", False),
    (TimeoutError(), "did not answer in time", False),  # also asyncio's, and asyncpg's command timeout
    (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), "connection", False),
    (asyncpg.ConnectionFailureError("connection failure"), "connection failed or was closed", False),
    (asyncpg.ClientCannotConnectError("cannot connect"), "connection failed or was closed", False),
    (asyncpg.PostgresConnectionError("connection exception"), "connection failed or was closed", False),
    (asyncpg.InterfaceError("cannot perform operation: connection is closed"), "connection was closed", False),
    (asyncpg.InterfaceError("pool is closing"), "connection was closed", False),
    (asyncpg.CannotConnectNowError("the database system is shutting down"), "starting up or shutting down", False),
    (asyncpg.CannotConnectNowError("the database system is starting up"), "starting up or shutting down", False),
    (asyncpg.AdminShutdownError("terminating connection due to administrator command"), "ended the connection", False),
    (asyncpg.CrashShutdownError("terminating connection because of crash"), "ended the connection", False),
    (asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"), "read-only", True),
    (TargetServerAttributeNotMatched("None of the hosts match"), "read-only", True),
    # asyncpg hands a pooled connection back to the pool when its server connection is lost
    (
        asyncpg.InterfaceError(f"cannot call Connection.fetchrow(): {'connection has been released back to the pool'}"),
        "connection was closed",
        False,
    ),
]
FAILOVER_IDS = [f"{type(e).__name__}:{str(e)[:30]}" for e, _, _ in FAILOVER_ERRORS]
# Errors that say nothing about the server's availability: a bug or a bad query stays a 500.
OTHER_ERRORS = [
    asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
    asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.SerializationError("could not serialize access"),
    asyncpg.exceptions.DataError("invalid input for query argument $1"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    ValueError("not a database error"),
]


@pytest.mark.parametrize(("exc", "reason", "read_only"), FAILOVER_ERRORS, ids=FAILOVER_IDS)
def test_each_failover_error_is_classified(exc: BaseException, reason: str, read_only: bool) -> None:
    failure = failover.classify(exc)
    assert failure is not None
    assert reason in failure.reason
    assert failure.read_only == read_only
    assert failure.timed_out == isinstance(exc, TimeoutError)


@pytest.mark.parametrize("exc", OTHER_ERRORS, ids=lambda e: type(e).__name__)
def test_other_errors_are_not_about_availability(exc: BaseException) -> None:
    assert failover.classify(exc) is None


def test_a_closed_connection_names_the_fatal_error_the_server_sent_before() -> None:
    closed = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    closed.__cause__ = asyncpg.AdminShutdownError("terminating connection due to administrator command")
    failure = failover.classify(closed)
    assert failure is not None and "ended the connection" in failure.reason


def test_the_primary_pool_wants_a_writable_server_unless_the_dsn_says_otherwise() -> None:
    assert read_write_unless_set(DSN) == "read-write"
    assert read_write_unless_set(DSN + "?target_session_attrs=primary") is None


class Pool:
    """A scripted asyncpg pool: `failures[step]` are raised, in order, by the next calls of that step
    (acquire, begin, query, commit); `calls` counts every step and what happened to connections."""

    def __init__(self, read_only: bool = False, **failures: list[BaseException]) -> None:
        self.failures = failures
        self.read_only = read_only
        self.calls: Counter[str] = Counter()

    def step(self, name: str) -> None:
        self.calls[name] += 1
        if self.failures.get(name):
            raise self.failures[name].pop(0)

    def acquire(self, *, timeout: float | None = None) -> Acquire:
        return Acquire(self)

    def connection(self) -> Conn:
        return Conn(self)

    async def release(self, conn: Conn) -> None:
        self.calls["release"] += 1

    async def expire_connections(self) -> None:
        self.calls["expire"] += 1


class Acquire:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.conn: Conn | None = None

    async def _get(self) -> Conn:
        self.pool.step("acquire")
        self.conn = self.pool.connection()
        return self.conn

    def __await__(self) -> Any:
        return self._get().__await__()

    async def __aenter__(self) -> Conn:
        return await self._get()

    async def __aexit__(self, *exc: object) -> None:
        assert self.conn is not None
        await self.pool.release(self.conn)


class Conn:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.closed = False

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True
        self.pool.calls["terminate"] += 1

    def transaction(self) -> Tx:
        return Tx(self.pool)

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any]:
        self.pool.step("query")
        return ROW

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        self.pool.step("query")
        return [ROW]

    async def fetchval(self, sql: str, *args: Any, timeout: float | None = None) -> str:
        self.pool.step("query")
        return "on" if self.pool.read_only else "off"  # SHOW transaction_read_only


class Tx:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def start(self) -> None:
        self.pool.step("begin")

    async def commit(self) -> None:
        self.pool.step("commit")

    async def rollback(self) -> None:
        self.pool.calls["rollback"] += 1


RELEASED = "connection has been released back to the pool"


class LostConn(Conn):
    """A pooled connection whose server connection was lost after BEGIN: asyncpg has handed it back to
    the pool, and every call on it says so (is_closed and terminate included)."""

    def is_closed(self) -> bool:
        raise asyncpg.InterfaceError(f"cannot call Connection.is_closed(): {RELEASED}")

    def terminate(self) -> None:
        raise asyncpg.InterfaceError(f"cannot call Connection.terminate(): {RELEASED}")

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any]:
        raise asyncpg.InterfaceError(f"cannot call Connection.fetchrow(): {RELEASED}")


class LostPool(Pool):
    def connection(self) -> Conn:
        return LostConn(self)


def call(primary: Pool, method: str, path: str, body: Any = None, replica: Pool | None = None) -> Reply:
    """The app's answer to one request, its primary pool (and one healthy replica's) being the given ones."""
    app = create_app(Settings(database_url=DSN, database_replica_urls=("postgresql://r/app",) if replica else ()))
    db = app.state.services.db
    db.primary = primary
    if replica is not None:
        db.replicas = [Replica("postgresql://r/app", 0)]
        db.replicas[0].pool, db.replicas[0].healthy = replica, True
    reply = asyncio.run(_asgi(app, method, path, body))
    reply.db = db
    return reply


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.db: Any = None  # the app's Database, to look at afterwards

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = json.loads(self.body)["error"]
        return error


async def _asgi(app: Any, method: str, path: str, body: Any) -> Reply:
    raw = json.dumps(body).encode() if body is not None else b""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))],
        "client": ("127.0.0.1", 40000),
        "server": ("test", 80),
    }
    inbox = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with contextlib.suppress(Exception):  # ServerErrorMiddleware re-raises after sending its 500
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return Reply(start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:]))


def assert_unavailable(reply: Reply, reason: str) -> str:
    assert reply.status == 503, reply.body
    assert reply.headers["retry-after"] == str(failover.RETRY_AFTER_SECONDS)
    assert reply.headers["content-type"] == "application/json"
    error = reply.error
    assert (error["status"], error["code"]) == (503, "database_unavailable")
    assert reason in error["message"]
    assert "hunter2" not in error["message"] and "db.internal" not in error["message"]
    message: str = error["message"]
    return message


@pytest.mark.parametrize(("exc", "reason", "read_only"), FAILOVER_ERRORS, ids=FAILOVER_IDS)
def test_a_write_failing_on_a_failover_error_is_a_503_and_its_connection_is_not_reused(
    exc: BaseException, reason: str, read_only: bool
) -> None:
    pool = Pool(query=[exc])
    message = assert_unavailable(call(pool, "POST", "/products", NEW_PRODUCT), reason)
    assert message.startswith("database: the primary is unavailable (")
    assert message.endswith("nothing was written, retry shortly")
    assert (pool.calls["query"], pool.calls["commit"], pool.calls["rollback"]) == (1, 0, 1)  # never run again
    assert (pool.calls["terminate"], pool.calls["expire"], pool.calls["release"]) == (1, 1, 1)


@pytest.mark.parametrize("exc", OTHER_ERRORS[:2], ids=lambda e: type(e).__name__)
def test_a_write_failing_otherwise_is_still_a_500_and_keeps_the_pool(exc: BaseException) -> None:
    pool = Pool(query=[exc])
    reply = call(pool, "POST", "/products", NEW_PRODUCT)
    assert (reply.status, reply.error["code"]) == (500, "internal")
    assert (pool.calls["terminate"], pool.calls["expire"], pool.calls["release"]) == (0, 0, 1)


@pytest.mark.parametrize(
    "step", ["acquire", "begin"], ids=["connecting", "at BEGIN, on a pooled connection the server had closed"]
)
def test_a_failure_before_the_write_began_is_tried_once_more(step: str) -> None:
    pool = Pool(**{step: [asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")]})
    reply = call(pool, "POST", "/products", NEW_PRODUCT)
    assert reply.status == 201, reply.body
    assert (pool.calls["acquire"], pool.calls["query"], pool.calls["commit"]) == (2, 1, 1)


def test_a_failure_before_the_write_began_twice_is_a_503() -> None:
    pool = Pool(acquire=[ConnectionRefusedError(111, "refused"), ConnectionRefusedError(111, "refused")])
    assert_unavailable(call(pool, "POST", "/products", NEW_PRODUCT), "refused the connection")
    assert (pool.calls["acquire"], pool.calls["query"]) == (2, 0)


def test_a_timeout_is_not_waited_for_twice() -> None:
    waiting = Pool(acquire=[TimeoutError()])
    assert_unavailable(call(waiting, "POST", "/products", NEW_PRODUCT), "no connection within 5 s")
    assert waiting.calls["acquire"] == 1
    answering = Pool(query=[TimeoutError()])
    assert_unavailable(call(answering, "GET", "/products/1"), "did not answer in time")
    assert answering.calls["acquire"] == 1


def test_a_connection_lost_during_commit_is_a_503_saying_the_write_may_have_been_applied() -> None:
    pool = Pool(commit=[ConnectionResetError(104, "Connection reset by peer")])
    message = assert_unavailable(call(pool, "POST", "/products", NEW_PRODUCT), "connection was reset")
    assert "may or may not have been applied" in message and "nothing was written" not in message
    assert (pool.calls["acquire"], pool.calls["query"], pool.calls["commit"]) == (1, 1, 1)  # not run again


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/products/1", {"name": "New"}),
        ("POST", "/users", {"email": "a@b.c", "name": "A", "password": "long enough"}),
    ],
)
def test_other_writes_answer_503_on_a_read_only_server(method: str, path: str, body: Any) -> None:
    pool = Pool(query=[asyncpg.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction")])
    assert_unavailable(call(pool, method, path, body), "read-only")
    assert pool.calls["expire"] == 1


def test_a_read_on_the_primary_is_tried_once_more_then_503() -> None:
    lost = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    once = Pool(query=[lost])
    assert call(once, "GET", "/products/1").status == 200
    assert (once.calls["acquire"], once.calls["terminate"], once.calls["expire"]) == (2, 1, 1)
    twice = Pool(query=[lost, asyncpg.CannotConnectNowError("the database system is starting up")])
    message = assert_unavailable(call(twice, "GET", "/products/1"), "starting up or shutting down")
    assert message.endswith("), retry shortly")


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionResetError(104, "Connection reset by peer"),
        asyncpg.SerializationError("canceling statement due to conflict with recovery"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_replica_failing_mid_failover_falls_back_to_the_primary(exc: BaseException) -> None:
    replica, primary = Pool(query=[exc]), Pool()
    reply = call(primary, "GET", "/products", replica=replica)
    assert reply.status == 200
    assert (replica.calls["query"], primary.calls["query"]) == (1, 1)
    # a replica going away is left until its probe passes again; a recovery conflict is about one query
    assert reply.db.replicas[0].healthy == isinstance(exc, asyncpg.SerializationError)


def test_a_replica_and_the_primary_failing_is_a_503() -> None:
    replica = Pool(query=[asyncpg.AdminShutdownError("terminating connection due to administrator command")])
    primary = Pool(acquire=[ConnectionRefusedError(111, "refused"), ConnectionRefusedError(111, "refused")])
    assert_unavailable(call(primary, "GET", "/products", replica=replica), "refused the connection")


def test_readyz_is_503_when_the_primary_is_read_only_and_the_pool_reconnects() -> None:
    pool = Pool(read_only=True)
    reply = call(pool, "GET", "/readyz")
    assert reply.status == 503
    assert json.loads(reply.body)["checks"]["postgres"].startswith("down: ReadOnlySQLTransactionError: ")
    assert (pool.calls["terminate"], pool.calls["expire"]) == (1, 1)
    assert call(Pool(), "GET", "/readyz").status == 200


@pytest.fixture
def request_() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/x", "headers": [], "query_string": b""})


@pytest.mark.parametrize(("exc", "reason", "read_only"), FAILOVER_ERRORS[7:], ids=FAILOVER_IDS[7:])
def test_an_asyncpg_error_escaping_the_pools_is_a_503_too(
    request_: Request, exc: Exception, reason: str, read_only: bool
) -> None:
    handler = failover.HANDLERS[next(c for c in type(exc).__mro__ if c in failover.HANDLERS)]
    response = asyncio.run(handler(request_, exc))
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert json.loads(response.body)["error"]["code"] == "database_unavailable"


def test_any_other_asyncpg_error_escaping_is_a_500(request_: Request) -> None:
    response = asyncio.run(failover.database_error(request_, asyncpg.UniqueViolationError("duplicate key")))
    assert (response.status_code, json.loads(response.body)["error"]["code"]) == (500, "internal")


def test_a_connection_lost_in_the_middle_of_a_write_is_a_503_even_once_asyncpg_released_it() -> None:
    """Found by the Patroni failover test: the rollback after the lost connection called is_closed() on a
    connection asyncpg had already handed back to the pool, and that error was a 500."""
    pool = LostPool()
    body = {"email": "a@b.c", "name": "A", "password": "long enough"}
    assert_unavailable(call(pool, "POST", "/users", body), "connection was closed")
    assert pool.calls["expire"] == 1
