"""PostgreSQL pools with read/write splitting.

Writes and read-your-writes reads go to the primary pool; other reads rotate over the replica pools
that passed their last health check, and fall back to the primary when none did or a replica fails
mid-query. Every pooled connection runs with `statement_timeout = DB_STATEMENT_TIMEOUT_MS`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from sample.config import Settings
from sample.metrics import DB_POOL, DB_QUERIES, DB_REPLICAS_HEALTHY

log = logging.getLogger(__name__)

HEALTH_INTERVAL_SECONDS = 2.0
PRIMARY_CONNECT_SECONDS = 30.0
# Errors that mean "this server is unreachable", as opposed to a bad query.
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

    async def _create_pool(self, dsn: str) -> asyncpg.Pool:
        timeout_ms = self.settings.db_statement_timeout_ms
        return await asyncpg.create_pool(
            dsn,
            min_size=self.settings.db_pool_min,
            max_size=self.settings.db_pool_max,
            timeout=5.0,
            command_timeout=timeout_ms / 1000 + 1,
            server_settings={"statement_timeout": str(timeout_ms), "application_name": "scaleladder-sample"},
        )

    async def open(self) -> None:
        """Open the primary pool (retrying for up to 30 s while it starts), then start the health loop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PRIMARY_CONNECT_SECONDS
        while True:
            try:
                self.primary = await self._create_pool(self.settings.database_url)
                break
            except CONNECTION_ERRORS as exc:
                if loop.time() > deadline:
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

    async def _read(self, method: str, sql: str, args: Sequence[Any], fresh: bool) -> Any:
        replica = self._read_pool(fresh)
        if replica is not None and replica.pool is not None:
            try:
                self._replica_queries.inc()
                return await getattr(replica.pool, method)(sql, *args)
            except CONNECTION_ERRORS as exc:
                replica.healthy = False
                log.warning("replica failed, retrying on primary", extra={"replica": replica.name, "error": str(exc)})
        assert self.primary is not None, "Database.open() not awaited"
        self._primary_queries.inc()
        return await getattr(self.primary, method)(sql, *args)

    async def fetch(self, sql: str, *args: Any, fresh: bool = False) -> list[asyncpg.Record]:
        """Rows from a replica, or from the primary when `fresh` (read-your-writes) or no replica is healthy."""
        return await self._read("fetch", sql, args, fresh)

    async def fetchrow(self, sql: str, *args: Any, fresh: bool = False) -> asyncpg.Record | None:
        return await self._read("fetchrow", sql, args, fresh)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A primary connection in a transaction, committed on normal exit and rolled back on error."""
        assert self.primary is not None, "Database.open() not awaited"
        async with self.primary.acquire() as conn, conn.transaction():
            yield Transaction(conn)

    async def ping_primary(self) -> None:
        """SELECT 1 on the primary within READY_TIMEOUT_MS; raises when it is unreachable."""
        assert self.primary is not None, "Database.open() not awaited"
        timeout = self.settings.ready_timeout_ms / 1000
        await asyncio.wait_for(self.primary.fetchval("SELECT 1", timeout=timeout), timeout)
