"""PostgreSQL pools with read/write splitting.

Writes and read-your-writes reads go to the primary pool; other reads rotate over the replica pools
that passed their last health check, and fall back to the primary when none did or a replica fails
mid-query. Every pooled connection runs with `statement_timeout = DB_STATEMENT_TIMEOUT_MS`.

Failover (`failover.py`): the primary pool only keeps connections to a server that takes writes
(`target_session_attrs=read-write` unless the DSN says otherwise). A request that needs the primary
and finds it unavailable (refused, reset, shutting down, starting up, read-only) gets a 503
`database_unavailable` with Retry-After, within bounded time: a connection is acquired within
ACQUIRE_TIMEOUT_SECONDS, every statement answers within DB_STATEMENT_TIMEOUT_MS + 1 s. Only what ran
before any of the caller's statements (acquire, BEGIN) and idempotent reads are tried a second time,
never a write whose COMMIT may have reached the server. A connection that failed is closed and the
pool's other connections are replaced on their next use, so the next request reconnects through the
DSN's host name, which after a failover names the new primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
from asyncpg.transaction import Transaction as PgTransaction

from sample.config import Settings
from sample.failover import COMMIT_UNKNOWN, NOTHING_WRITTEN, READ_ONLY, DatabaseUnavailable, Failure, classify
from sample.metrics import DB_POOL, DB_QUERIES, DB_REPLICAS_HEALTHY

log = logging.getLogger(__name__)
T = TypeVar("T")

HEALTH_INTERVAL_SECONDS = 2.0
PRIMARY_CONNECT_SECONDS = 30.0
ACQUIRE_TIMEOUT_SECONDS = 5.0
"""Bound on getting a pooled connection: waiting for a free one plus connecting (also asyncpg's connect timeout)."""
# Errors that mean "this server is unreachable", as opposed to a bad query (the replica probe's view;
# requests ask `failover.classify`, which also knows the server errors of a failover).
CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


class Replica:
    """One replica DSN, its pool once it could be opened, and its last health result."""

    def __init__(self, dsn: str, index: int) -> None:
        self.dsn = dsn
        self.name = f"replica{index}"
        self.pool: asyncpg.Pool | None = None
        self.healthy = False


class Transaction:
    """A primary connection inside a transaction; every statement is counted."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        DB_QUERIES.labels("primary").inc()
        return await self.conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        DB_QUERIES.labels("primary").inc()
        return await self.conn.fetchrow(sql, *args)


class Database:
    """The primary pool, the replica pools and the health loop that picks readable replicas."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.primary: asyncpg.Pool | None = None
        self.replicas = [Replica(dsn, i) for i, dsn in enumerate(settings.database_replica_urls)]
        self._rotation = itertools.count()
        self._health_task: asyncio.Task[None] | None = None
        self._primary_queries = DB_QUERIES.labels("primary")
        self._replica_queries = DB_QUERIES.labels("replica")

    async def _create_pool(self, dsn: str, *, writable: bool = False) -> asyncpg.Pool:
        """A pool on `dsn`; `writable`: its connections must reach a server that takes writes."""
        timeout_ms = self.settings.db_statement_timeout_ms
        return await asyncpg.create_pool(
            dsn,
            min_size=self.settings.db_pool_min,
            max_size=self.settings.db_pool_max,
            timeout=ACQUIRE_TIMEOUT_SECONDS,
            command_timeout=timeout_ms / 1000 + 1,
            server_settings={"statement_timeout": str(timeout_ms), "application_name": "scaleladder-sample"},
            target_session_attrs=read_write_unless_set(dsn) if writable else None,
        )

    async def open(self) -> None:
        """Open the primary pool (retrying for up to 30 s while it starts), then start the health loop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PRIMARY_CONNECT_SECONDS
        while True:
            try:
                self.primary = await self._create_pool(self.settings.database_url, writable=True)
                break
            except Exception as exc:
                if classify(exc) is None or loop.time() > deadline:
                    raise
                log.warning("primary database not reachable yet, retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
        await self.check_replicas()
        self._health_task = asyncio.create_task(self._health_loop())

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        pools = [self.primary] + [r.pool for r in self.replicas]
        await asyncio.gather(*(p.close() for p in pools if p is not None), return_exceptions=True)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)
            await self.check_replicas()

    async def check_replicas(self) -> None:
        """Open missing replica pools and probe each with SELECT 1 within READY_TIMEOUT_MS."""
        for replica in self.replicas:
            replica.healthy = await self._probe(replica)
        DB_REPLICAS_HEALTHY.set(sum(r.healthy for r in self.replicas))
        self._record_pool_usage()

    async def _probe(self, replica: Replica) -> bool:
        timeout = self.settings.ready_timeout_ms / 1000
        try:
            if replica.pool is None:
                replica.pool = await asyncio.wait_for(self._create_pool(replica.dsn), timeout)
            await replica.pool.fetchval("SELECT 1", timeout=timeout)
        except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            if replica.healthy:
                log.warning("replica unhealthy, reads fall back", extra={"replica": replica.name, "error": str(exc)})
            return False
        return True

    def _record_pool_usage(self) -> None:
        pools = [("primary", self.primary)] + [(r.name, r.pool) for r in self.replicas]
        for name, pool in pools:
            if pool is None:
                continue
            idle = pool.get_idle_size()
            DB_POOL.labels(name, "in_use").set(pool.get_size() - idle)
            DB_POOL.labels(name, "idle").set(idle)
            DB_POOL.labels(name, "max").set(pool.get_max_size())

    def _read_pool(self, fresh: bool) -> Replica | None:
        if fresh:
            return None
        healthy = [r for r in self.replicas if r.healthy]
        if not healthy:
            return None
        return healthy[next(self._rotation) % len(healthy)]

    def _primary_pool(self) -> asyncpg.Pool:
        assert self.primary is not None, "Database.open() not awaited"
        return self.primary

    async def _read(self, method: str, sql: str, args: Sequence[Any], fresh: bool) -> Any:
        replica = self._read_pool(fresh)
        if replica is not None and replica.pool is not None:
            try:
                self._replica_queries.inc()
                async with replica.pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
                    return await getattr(conn, method)(sql, *args)
            except Exception as exc:
                # mid-failover a replica restarts to follow the new primary (unhealthy until its probe
                # passes again), or cancels a query that conflicts with what it replays (40001, only
                # this query): either way the primary answers instead
                down = classify(exc) is not None
                if not down and not isinstance(exc, asyncpg.SerializationError):
                    raise
                replica.healthy = replica.healthy and not down
                log.warning("replica failed, retrying on primary", extra={"replica": replica.name, "error": str(exc)})

        async def query(conn: asyncpg.Connection) -> Any:
            self._primary_queries.inc()
            return await getattr(conn, method)(sql, *args)

        return await self.read_primary(query)

    async def fetch(self, sql: str, *args: Any, fresh: bool = False) -> list[asyncpg.Record]:
        """Rows from a replica, or from the primary when `fresh` (read-your-writes) or no replica is healthy."""
        return await self._read("fetch", sql, args, fresh)

    async def fetchrow(self, sql: str, *args: Any, fresh: bool = False) -> asyncpg.Record | None:
        return await self._read("fetchrow", sql, args, fresh)

    async def read_primary(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`work(conn)`, which only reads, on a primary connection: when the connection fails it runs once
        more on a fresh one (a read can be repeated); DatabaseUnavailable (503) when that fails too."""
        pool = self._primary_pool()
        for attempt in range(2):
            acquired = False
            try:
                async with pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
                    acquired = True
                    try:
                        return await work(conn)
                    except Exception as exc:
                        await self._discard(pool, conn, exc)  # before the release: the pool must not keep it
                        raise
            except Exception as exc:
                failure = _classify(exc, acquiring=not acquired)
                if failure is None:
                    raise
                self._log_failure("read", exc, attempt)
                if attempt or failure.timed_out:
                    raise DatabaseUnavailable(failure) from exc
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A primary connection in a transaction, committed on normal exit and rolled back on error.

        A failover answers 503 (DatabaseUnavailable): a failure while acquiring the connection or at
        BEGIN is tried once more (nothing of the block has run); one in the block or at COMMIT is not,
        and the message says whether the write may have been applied.
        """
        pool = self._primary_pool()
        conn, tx = await self._begin(pool)
        committing = False
        try:
            try:
                yield Transaction(conn)
            except BaseException:
                await self._rollback(conn, tx)
                raise
            committing = True
            await tx.commit()
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            await self._discard(pool, conn, exc)
            self._log_failure("commit" if committing else "write", exc, 1)
            raise DatabaseUnavailable(failure, outcome=COMMIT_UNKNOWN if committing else NOTHING_WRITTEN) from exc
        finally:
            await pool.release(conn)

    async def _begin(self, pool: asyncpg.Pool) -> tuple[asyncpg.Connection, PgTransaction]:
        """A primary connection and its started transaction; the only step of a write that is retried."""
        for attempt in range(2):
            conn: asyncpg.Connection | None = None
            try:
                conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS)
                tx = conn.transaction()
                await tx.start()
                return conn, tx
            except Exception as exc:
                if conn is not None:
                    await self._discard(pool, conn, exc)
                    await pool.release(conn)
                failure = _classify(exc, acquiring=conn is None)
                if failure is None:
                    raise
                self._log_failure("begin", exc, attempt)
                if attempt or failure.timed_out:
                    raise DatabaseUnavailable(failure, outcome=NOTHING_WRITTEN) from exc
            except BaseException:
                if conn is not None:
                    await pool.release(conn)
                raise
        raise AssertionError("unreachable")

    @staticmethod
    async def _rollback(conn: asyncpg.Connection, tx: PgTransaction) -> None:
        """Roll back after the block failed; a connection that cannot even do that is closed (the server
        rolls back what it had), and the block's own error is what the caller sees."""
        try:
            if not conn.is_closed():
                await tx.rollback()
        except Exception:
            with contextlib.suppress(Exception):  # lost, and already handed back to the pool
                conn.terminate()

    @staticmethod
    async def _discard(pool: asyncpg.Pool, conn: asyncpg.Connection, exc: BaseException) -> None:
        """After `exc` on `conn`: when it means the server is unavailable, close `conn` (also one that is
        still open, to a read-only server) and have the pool replace its other connections on their next
        use, so they are made again through the DSN, to whichever server is the primary by then."""
        if classify(exc) is None:
            return
        with contextlib.suppress(asyncpg.InterfaceError):  # lost, and already handed back to the pool
            conn.terminate()
        await pool.expire_connections()

    @staticmethod
    def _log_failure(step: str, exc: BaseException, attempt: int) -> None:
        then = "answering 503" if attempt else "trying once more"
        log.warning(
            f"primary unavailable at {step}, {then}",
            extra={"step": step, "error": f"{type(exc).__name__}: {exc}"},
        )

    async def ping_primary(self) -> None:
        """One round trip to the primary within READY_TIMEOUT_MS; raises when it is unreachable, and when it
        is read-only (a demoted primary): then the pool reconnects, like after a failed write."""
        pool = self._primary_pool()
        timeout = self.settings.ready_timeout_ms / 1000

        async def ping() -> None:
            async with pool.acquire(timeout=timeout) as conn:
                try:
                    if await conn.fetchval("SHOW transaction_read_only", timeout=timeout) == "on":
                        raise asyncpg.ReadOnlySQLTransactionError(f"the server is {READ_ONLY.removeprefix('it is ')}")
                except Exception as exc:
                    await self._discard(pool, conn, exc)
                    raise

        await asyncio.wait_for(ping(), timeout)


def _classify(exc: BaseException, acquiring: bool) -> Failure | None:
    """`failover.classify`, saying so when the time ran out while waiting for a pooled connection."""
    failure = classify(exc)
    if failure is not None and failure.timed_out and acquiring:
        waited = f"no connection within {ACQUIRE_TIMEOUT_SECONDS:g} s: all in use, or it does not answer"
        return dataclasses.replace(failure, reason=waited)
    return failure


def read_write_unless_set(dsn: str) -> str | None:
    """The primary pool's `target_session_attrs`: read-write, unless its DSN chooses its own."""
    return None if "target_session_attrs" in parse_qs(urlsplit(dsn).query) else "read-write"
