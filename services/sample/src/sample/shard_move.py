"""Moving one logical shard to another group (`sample shards move --logical N --to GROUP`).

1. copy:      the shard's rows (users, orders, order_items) from the source to the target, the
              source still writable; leftovers of an earlier failed move on the target go first.
2. freeze:    the exclusive fence lock on the source waits for in-flight writes, then marks the
              shard `frozen`: writes answer 503 with Retry-After from here on.
3. catch up:  rows added, changed or removed since step 1 (row checksums compared) are applied.
4. verify:    per table, row count and an ordered checksum over all rows match on both sides.
5. switch:    the next map version goes into the main group; the target's fence (if any) is lifted,
              the source's becomes `moved` (a stale router reloads the map and retries).
6. drain:     wait `drain_seconds` (> SHARD_MAP_REFRESH_SECONDS) so that every process reads the new map.
7. delete:    the shard's rows on the source.

Only one move runs at a time (a session advisory lock in the main group).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from sample.shards import FENCE_LOCK_CLASS, ShardMap, latest_map

MOVE_LOCK = 0x5CA1E6
UTC = {"TimeZone": "UTC"}  # the same text for timestamps on both sides of a checksum


class MoveError(Exception):
    """The move cannot start or did not verify; the message says why and what to do."""


@dataclass(frozen=True)
class Table:
    """A user-scoped table: its key, its columns, and which of its rows belong to logical shard $1 (of $2)."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    rows_of: str

    def select(self, what: str) -> str:
        return f"SELECT {what} FROM {self.name} t WHERE {self.rows_of}"

    @property
    def row(self) -> str:
        return "md5(ROW(" + ", ".join(f"t.{c}" for c in self.columns) + ")::text)"


OF_USER = "shard_of(t.user_id, $2) = $1"
TABLES = (
    Table("users", ("id",), ("id", "email", "name", "password_hash", "created_at"), "shard_of(t.id, $2) = $1"),
    Table("orders", ("id",), ("id", "user_id", "status", "total_cents", "created_at"), OF_USER),
    Table(
        "order_items",
        ("order_id", "product_id"),
        ("order_id", "product_id", "quantity", "price_cents"),
        "t.order_id IN (SELECT o.id FROM orders o WHERE shard_of(o.user_id, $2) = $1)",
    ),
)


async def _rows(conn: asyncpg.Connection, table: Table, logical: int, count: int) -> list[asyncpg.Record]:
    columns = ", ".join(table.columns)
    rows: list[asyncpg.Record] = await conn.fetch(
        table.select(columns) + f" ORDER BY {', '.join(table.key)}", logical, count
    )
    return rows


async def _sums(conn: asyncpg.Connection, table: Table, logical: int, count: int) -> dict[tuple[Any, ...], str]:
    rows = await conn.fetch(table.select(f"{', '.join(table.key)}, {table.row} AS sum"), logical, count)
    return {tuple(row[k] for k in table.key): row["sum"] for row in rows}


async def checksum(conn: asyncpg.Connection, table: Table, logical: int, count: int) -> tuple[int, str]:
    """(rows, md5 over every row's md5 in key order) of the shard's rows of `table`."""
    order = ", ".join(f"t.{k}" for k in table.key)
    row = await conn.fetchrow(
        table.select(f"count(*) AS n, coalesce(md5(string_agg({table.row}, '' ORDER BY {order})), '') AS sum"),
        logical,
        count,
    )
    assert row is not None
    return row["n"], row["sum"]


async def _copy_all(source: asyncpg.Connection, target: asyncpg.Connection, logical: int, count: int) -> dict[str, int]:
    copied = {}
    # one snapshot of the source: items of an order inserted between two reads cannot come without it
    async with source.transaction(isolation="repeatable_read", readonly=True):
        snapshot = {table.name: await _rows(source, table, logical, count) for table in TABLES}
    async with target.transaction():
        for table in reversed(TABLES):  # leftovers of a failed move: children first
            await target.execute(f"DELETE FROM {table.name} t WHERE {table.rows_of}", logical, count)
        for table in TABLES:
            rows = snapshot[table.name]
            if rows:
                await target.copy_records_to_table(table.name, records=rows, columns=list(table.columns))
            copied[table.name] = len(rows)
    return copied


async def _catch_up(source: asyncpg.Connection, target: asyncpg.Connection, logical: int, count: int) -> dict[str, int]:
    """Upsert rows that are new or changed on the source, then delete rows the source no longer has."""
    changed: dict[str, int] = {}
    async with target.transaction():
        extra: dict[str, list[tuple[Any, ...]]] = {}
        for table in TABLES:
            theirs, ours = await _sums(source, table, logical, count), await _sums(target, table, logical, count)
            stale = {key for key, value in theirs.items() if ours.get(key) != value}
            extra[table.name] = [key for key in ours if key not in theirs]
            changed[table.name] = len(stale) + len(extra[table.name])
            if not stale:
                continue
            rows = [r for r in await _rows(source, table, logical, count) if tuple(r[k] for k in table.key) in stale]
            values = ", ".join(f"${i}" for i in range(1, len(table.columns) + 1))
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in table.columns if c not in table.key)
            await target.executemany(
                f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({values})"
                f" ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}",
                [tuple(r) for r in rows],
            )
        for table in reversed(TABLES):
            if extra[table.name]:
                match = " AND ".join(f"{k} = ${i}" for i, k in enumerate(table.key, 1))
                await target.executemany(f"DELETE FROM {table.name} WHERE {match}", extra[table.name])
    return changed


async def _fence(conn: asyncpg.Connection, logical: int, state: str | None) -> None:
    """Set the shard's fence on one group (None: lift it), after every write holding the shared lock ended."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", FENCE_LOCK_CLASS, logical)
        if state is None:
            await conn.execute("DELETE FROM shard_fence WHERE logical = $1", logical)
        else:
            await conn.execute(
                "INSERT INTO shard_fence (logical, state) VALUES ($1, $2)"
                " ON CONFLICT (logical) DO UPDATE SET state = EXCLUDED.state, since = now()",
                logical,
                state,
            )


async def move(
    main_dsn: str, group_dsns: dict[str, str], logical: int, to: str, *, drain_seconds: float
) -> dict[str, Any]:
    """Move logical shard `logical` to group `to`; returns what was done (rows, checksums, times, version)."""
    main = await asyncpg.connect(main_dsn, server_settings=UTC)
    try:
        if not await main.fetchval("SELECT pg_try_advisory_lock($1)", MOVE_LOCK):
            raise MoveError("another shard move is running (advisory lock in the main group); retry when it ends")
        current = await latest_map(main)
        if current is None:
            raise MoveError("no shard map in the main group: run `sample migrate` first")
        _check(current, group_dsns, logical, to)
        source = current.group_of(logical)
        return await _move(main, current, group_dsns, logical, source, to, drain_seconds)
    finally:
        await main.close()


def _check(current: ShardMap, group_dsns: dict[str, str], logical: int, to: str) -> None:
    if not 0 <= logical < current.logical_shards:
        raise MoveError(f"--logical: got {logical}, allowed: 0 to {current.logical_shards - 1}")
    if to not in group_dsns:
        raise MoveError(f"--to: got {to!r}, allowed: one of SHARD_GROUPS {sorted(group_dsns)}")
    if current.group_of(logical) == to:
        raise MoveError(f"--to: logical shard {logical} is already on {to} (map version {current.version})")


async def _move(
    main: asyncpg.Connection,
    current: ShardMap,
    group_dsns: dict[str, str],
    logical: int,
    source_name: str,
    to: str,
    drain_seconds: float,
) -> dict[str, Any]:
    count = current.logical_shards
    source = await asyncpg.connect(group_dsns[source_name], server_settings=UTC)
    target = await asyncpg.connect(group_dsns[to], server_settings=UTC)
    try:
        copied = await _copy_all(source, target, logical, count)
        await _fence(source, logical, "frozen")
        frozen_at = time.monotonic()
        caught_up = await _catch_up(source, target, logical, count)
        sums = {}
        for table in TABLES:
            theirs, ours = await checksum(source, table, logical, count), await checksum(target, table, logical, count)
            if theirs != ours:
                await _fence(source, logical, None)  # unfrozen: the source still owns the shard
                raise MoveError(f"{table.name}: source has {theirs}, target {ours} after the copy; the move was undone")
            sums[table.name] = {"rows": theirs[0], "md5": theirs[1]}
        moved = current.moved(logical, to)
        await main.execute(
            "INSERT INTO shard_map (version, map) VALUES ($1, $2::jsonb)", moved.version, json.dumps(moved.to_dict())
        )
        await _fence(target, logical, None)
        await _fence(source, logical, "moved")
        frozen_ms = round((time.monotonic() - frozen_at) * 1000, 1)
        await asyncio.sleep(drain_seconds)
        async with source.transaction():
            deleted = {
                t.name: int(
                    (await source.execute(f"DELETE FROM {t.name} t WHERE {t.rows_of}", logical, count)).split()[-1]
                )
                for t in reversed(TABLES)
            }
    finally:
        await source.close()
        await target.close()
    return {
        "logical": logical,
        "from": source_name,
        "to": to,
        "version": moved.version,
        "copied": copied,
        "caught_up": caught_up,
        "verified": sums,
        "deleted_from_source": deleted,
        "read_only_ms": frozen_ms,
    }
