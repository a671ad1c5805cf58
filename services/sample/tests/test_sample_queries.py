"""Query hygiene: every read path is served by an index, and statement_timeout is enforced."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from sample.config import load_settings
from sample.db import Database
from sample.repo import orders, products, users
from sample_helpers import Postgres

# Each query path with representative arguments.
QUERY_PATHS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "products by id, batched": (products.GET_MANY, ([1, 2, 3],)),
    "products page": (products.PAGE, (10, 20)),
    "user by id": (users.GET_ONE, (1,)),
    "login by email": (users.CREDENTIALS, ("Ada@Example.com",)),
    "lock products for an order": (orders.LOCK_PRODUCTS, ([1, 2],)),
    "decrement stock": (orders.DECREMENT_STOCK, ([1, 2], [1, 1])),
    "order by id": (orders.GET_ONE, (1,)),
    "a user's orders page": (orders.PAGE_FOR_USER, (1, 0, 20)),
    "items of many orders": (orders.ITEMS_OF_ORDERS, ([1, 2, 3],)),
}


def _scans(plan: dict[str, Any]) -> list[str]:
    found = [f"{plan['Node Type']} on {plan.get('Relation Name')}"] if "Scan" in plan["Node Type"] else []
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


async def _plan(dsn: str, sql: str, args: tuple[Any, ...]) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET enable_seqscan = off")  # a seq scan now shows only when no index can serve
        rows = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
        return _scans(json.loads(rows)[0]["Plan"])
    finally:
        await conn.close()


@pytest.mark.parametrize("name", list(QUERY_PATHS))
def test_every_query_path_uses_an_index(postgres: Postgres, name: str) -> None:
    sql, args = QUERY_PATHS[name]
    scans = asyncio.run(_plan(postgres.dsn, sql, args))
    table_scans = [s for s in scans if not s.startswith("Function Scan")]  # unnest() of the argument arrays
    assert table_scans, scans
    assert not [s for s in table_scans if s.startswith("Seq Scan")], scans


async def _sleep_through_timeout(dsn: str) -> None:
    db = Database(load_settings({"DATABASE_URL": dsn, "DB_STATEMENT_TIMEOUT_MS": "200", "DB_POOL_MIN": "1"}))
    await db.open()
    try:
        assert await db.fetchrow("SELECT 1 AS one") is not None
        await db.fetch("SELECT pg_sleep(5)")
    finally:
        await db.close()


def test_statement_timeout_cancels_long_queries(postgres: Postgres) -> None:
    with pytest.raises(asyncpg.QueryCanceledError, match="statement timeout"):
        asyncio.run(_sleep_through_timeout(postgres.dsn))
