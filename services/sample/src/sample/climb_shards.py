"""4 -> 5: `sample climb adopt-shards`, the main group's users, orders and order items into the shard groups.

Phases 2-4 keep every user, order and item in the main group. Phase 5's `sample migrate` (with
SHARD_GROUPS) adds the sharded schema next to them: migration 101 in main keeps the old `users`,
`orders` and `order_items` tables (nothing drops them) and creates `user_ids` (set after the
users it found), `order_ids`, `user_directory` and `shard_map`; each group gets the same three
tables, empty. The sharded service never reads main's copies: this command moves them.

Run with the phase-5 migration Job's env (DATABASE_URL the main primary, SHARD_GROUPS, SHARD_<i>_URL,
...), after `sample migrate` and before the web tier switches to sharded mode. Steps (each logged
as `{"msg": "climb step", "step": ...}` before it starts):

1. prepare:   leftovers of an earlier run are deleted from the groups (rows of main's users); a group
              holding rows of any other user (the sharded tier has written already) stops the run.
2. copy:      from one repeatable-read snapshot of main (still writable), each user and its orders
              and items into the group owning the user's logical shard (the live map in main).
              **Order ids are renumbered** to the sharded form the router needs, `old * 1024 +
              logical shard` (GET /orders/{id} routes by id mod 1024): deterministic, so a re-run
              gives the same ids; an order's old id is `id div 1024`.
3. freeze:    a statement trigger on main's users, orders and order_items raises SQLSTATE 25006 with
              a message saying why (created under SHARE ROW EXCLUSIVE locks: it waits for writes in
              flight). The phase-4 service answers 503 with Retry-After: 1; reads keep working.
4. catch-up:  rows added, changed or removed since the snapshot, found by per-row md5 of main's rows
              (as they map into each group) against the group's, are upserted or deleted.
5. directory: `user_directory` gets every user's lower(email); `user_ids` and `order_ids` move past
              the copied ids (new orders: `n * 1024 + logical` with n > every old id).
6. verify:    per group per table, row count and an md5 over every row's md5 in key order, main's
              rows that map there against all of the group's rows; every user in the directory.
              A difference lifts the freeze (the phase-4 tier keeps serving) and fails.
7. record:    `climb_adopt` in main says done, with the report.

A crash at any step (SIGKILL included) is repaired by running the command again: it starts over
from step 1 (a frozen main stays frozen meanwhile). A run after the record prints the recorded
report (`already_done`); it does not compare again, because the sharded tier may have written by then.

Main's writes stay frozen until the web tier runs sharded; then `--finish` empties main's users,
orders and order items (the groups hold them now). The freeze triggers stay: a phase-4 pod still
running by mistake gets 503 rather than writing rows nobody reads. `--unfreeze` abandons the climb
before the switch: the triggers go and the record is cleared (a later run starts over).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from sample.climb_cli import ClimbError
from sample.climb_database import freeze_tables, step, unfreeze_tables
from sample.shards import MAX_LOGICAL_SHARDS, ShardMap, latest_map

Args = tuple[Any, ...]
ACTION = "adopt-shards"
ADOPT_LOCK = 0x5CA1E8
"""One adopt at a time: a session advisory lock in the main group."""
UTC = {"TimeZone": "UTC"}
FROZEN = ["users", "orders", "order_items"]
REASON = (
    "users and orders move to the shard groups (sample climb adopt-shards),"
    " writes resume when the web tier runs sharded, retry shortly"
)
RECORD = """
CREATE TABLE IF NOT EXISTS climb_adopt (
    id      integer PRIMARY KEY CHECK (id = 1),
    state   text NOT NULL CHECK (state IN ('done', 'finished')),
    report  jsonb NOT NULL,
    done_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Table:
    """A user-scoped table: its key, its columns, and main's rows as they land in a group
    ($1: the group's logical shards, $2: L), with the same column names."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    from_main: str

    def source(self, main: bool) -> str:
        return self.from_main if main else f"SELECT {', '.join(self.columns)} FROM {self.name}"

    @property
    def row(self) -> str:
        return "md5(ROW(" + ", ".join(f"t.{c}" for c in self.columns) + ")::text)"


RENUMBERED = f"t.id * {MAX_LOGICAL_SHARDS} + shard_of(t.user_id, $2)"
TABLES = (
    Table(
        "users",
        ("id",),
        ("id", "email", "name", "password_hash", "created_at"),
        "SELECT t.id, t.email, t.name, t.password_hash, t.created_at FROM users t WHERE shard_of(t.id, $2) = ANY($1)",
    ),
    Table(
        "orders",
        ("id",),
        ("id", "user_id", "status", "total_cents", "created_at"),
        f"SELECT {RENUMBERED} AS id, t.user_id, t.status, t.total_cents, t.created_at"
        " FROM orders t WHERE shard_of(t.user_id, $2) = ANY($1)",
    ),
    Table(
        "order_items",
        ("order_id", "product_id"),
        ("order_id", "product_id", "quantity", "price_cents"),
        f"SELECT i.order_id * {MAX_LOGICAL_SHARDS} + shard_of(o.user_id, $2) AS order_id, i.product_id, i.quantity,"
        " i.price_cents FROM order_items i JOIN orders o ON o.id = i.order_id WHERE shard_of(o.user_id, $2) = ANY($1)",
    ),
)


async def _query(conn: asyncpg.Connection, table: Table, what: str, main: bool, args: Args, tail: str = "") -> Any:
    sql = f"SELECT {what} FROM ({table.source(main)}) t{tail}"
    return await conn.fetch(sql, *args) if main else await conn.fetch(sql)


async def _rows(conn: asyncpg.Connection, table: Table, main: bool, args: Args) -> list[asyncpg.Record]:
    what = ", ".join(f"t.{c}" for c in table.columns)
    return list(await _query(conn, table, what, main, args, f" ORDER BY {', '.join(f't.{k}' for k in table.key)}"))


async def _sums(conn: asyncpg.Connection, table: Table, main: bool, args: Args) -> dict[tuple[Any, ...], str]:
    rows = await _query(conn, table, ", ".join(f"t.{k}" for k in table.key) + f", {table.row} AS sum", main, args)
    return {tuple(row[k] for k in table.key): row["sum"] for row in rows}


async def checksum(conn: asyncpg.Connection, table: Table, main: bool, args: Args) -> tuple[int, str]:
    """(rows, md5 over every row's md5 in key order): main's rows for a group, or all of a group's."""
    order = ", ".join(f"t.{k}" for k in table.key)
    what = f"count(*) AS n, coalesce(md5(string_agg({table.row}, '' ORDER BY {order})), '') AS sum"
    [row] = await _query(conn, table, what, main, args)
    return row["n"], row["sum"]


async def adopt(main_dsn: str, group_dsns: dict[str, str]) -> dict[str, Any]:
    """Copy, freeze, catch up, fill the directory, verify, record; the report. ClimbError when it cannot."""
    main = await asyncpg.connect(main_dsn, server_settings=UTC)
    try:
        if not await main.fetchval("SELECT pg_try_advisory_lock($1)", ADOPT_LOCK):
            raise ClimbError("another adopt-shards is running (advisory lock in the main group); retry when it ends")
        if await main.fetchval("SELECT to_regclass('public.shard_map')") is None:
            raise ClimbError("no shard map in the main group: run `sample migrate` with SHARD_GROUPS first")
        current = await latest_map(main)
        if current is None:
            raise ClimbError("no shard map in the main group: run `sample migrate` with SHARD_GROUPS first")
        if missing := sorted(set(current.groups) - set(group_dsns)):
            raise ClimbError(f"SHARD_GROUPS lacks {missing}, which shard map version {current.version} uses")
        await main.execute(RECORD)
        done = await main.fetchrow("SELECT state, report::text FROM climb_adopt")
        if done is not None:
            return {**json.loads(done["report"]), "already_done": True, "state": done["state"]}
        groups = {name: await asyncpg.connect(group_dsns[name], server_settings=UTC) for name in current.groups}
        try:
            return await _adopt(main, groups, current)
        finally:
            for conn in groups.values():
                await conn.close()
    finally:
        await main.close()


async def _adopt(main: asyncpg.Connection, groups: dict[str, asyncpg.Connection], current: ShardMap) -> dict[str, Any]:
    count = current.logical_shards
    args = {name: (logicals, count) for name, logicals in current.owned().items()}
    step(ACTION, "prepare")
    users = [row[0] for row in await main.fetch("SELECT id FROM users")]
    for name, conn in groups.items():
        foreign = await conn.fetchval(
            "SELECT (SELECT count(*) FROM users WHERE NOT id = ANY($1))"
            " + (SELECT count(*) FROM orders WHERE NOT user_id = ANY($1))",
            users,
        )
        if foreign:
            raise ClimbError(
                f"{name} holds {foreign} users or orders of users main does not have: has the web tier"
                " switched to sharded mode already? Nothing was changed"
            )
    for conn in groups.values():
        async with conn.transaction():
            await conn.execute(
                "DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE user_id = ANY($1))", users
            )
            await conn.execute("DELETE FROM orders WHERE user_id = ANY($1)", users)
            await conn.execute("DELETE FROM users WHERE id = ANY($1)", users)
    step(ACTION, "copy")
    copied: dict[str, dict[str, int]] = {}
    async with main.transaction(isolation="repeatable_read", readonly=True):
        snapshot = {
            name: {t.name: await _rows(main, t, True, args[name]) for t in TABLES} for name in groups
        }  # one snapshot: an order's items come with it
    for name, conn in groups.items():
        async with conn.transaction():
            for table in TABLES:
                rows = snapshot[name][table.name]
                if rows:
                    await conn.copy_records_to_table(table.name, records=rows, columns=list(table.columns))
        copied[name] = {t.name: len(snapshot[name][t.name]) for t in TABLES}
    del snapshot
    step(ACTION, "freeze")
    await freeze_tables(main, FROZEN, REASON)
    frozen_at = time.monotonic()
    try:
        step(ACTION, "catch-up")
        caught_up = {name: await _catch_up(main, conn, args[name]) for name, conn in groups.items()}
        step(ACTION, "directory")
        directory = await _directory(main)
        step(ACTION, "verify")
        verified = {name: await _verify(main, name, conn, args[name]) for name, conn in groups.items()}
        await _verify_directory(main)
    except Exception as exc:
        try:
            await unfreeze_tables(main)
        except Exception as again:
            raise ClimbError(f"{exc}; lifting the freeze failed too ({again}): run --unfreeze") from exc
        raise ClimbError(f"{exc}; main's users and orders take writes again, nothing was switched") from exc
    frozen_ms = round((time.monotonic() - frozen_at) * 1000, 1)
    report = {
        "action": ACTION,
        "map_version": current.version,
        "copied": copied,
        "caught_up": caught_up,
        "verified": verified,
        **directory,
        "order_ids": f"renumbered: new = old * {MAX_LOGICAL_SHARDS} + logical shard",
        "frozen_ms": frozen_ms,
        "main": "users, orders and order_items frozen until the web tier runs sharded; then --finish",
    }
    step(ACTION, "record")
    await main.execute(
        "INSERT INTO climb_adopt (id, state, report) VALUES (1, 'done', $1::jsonb)"
        " ON CONFLICT (id) DO UPDATE SET state = 'done', report = EXCLUDED.report, done_at = now()",
        json.dumps(report, default=str),
    )
    return report


async def _catch_up(main: asyncpg.Connection, conn: asyncpg.Connection, args: Args) -> dict[str, int]:
    """Upsert main's rows that are new or changed for this group, then delete rows main no longer has."""
    changed: dict[str, int] = {}
    async with conn.transaction():
        extra: dict[str, list[tuple[Any, ...]]] = {}
        for table in TABLES:
            theirs, ours = await _sums(main, table, True, args), await _sums(conn, table, False, ())
            stale = {key for key, value in theirs.items() if ours.get(key) != value}
            extra[table.name] = [key for key in ours if key not in theirs]
            changed[table.name] = len(stale) + len(extra[table.name])
            if not stale:
                continue
            rows = [r for r in await _rows(main, table, True, args) if tuple(r[k] for k in table.key) in stale]
            values = ", ".join(f"${i}" for i in range(1, len(table.columns) + 1))
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in table.columns if c not in table.key)
            await conn.executemany(
                f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({values})"
                f" ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}",
                [tuple(r) for r in rows],
            )
        for table in reversed(TABLES):
            if extra[table.name]:
                match = " AND ".join(f"{k} = ${i}" for i, k in enumerate(table.key, 1))
                await conn.executemany(f"DELETE FROM {table.name} WHERE {match}", extra[table.name])
    return changed


async def _directory(main: asyncpg.Connection) -> dict[str, Any]:
    """Every user's email in `user_directory`; `user_ids` and `order_ids` past the copied ids."""
    async with main.transaction():
        added = await main.execute(
            "INSERT INTO user_directory (email_lower, user_id) SELECT lower(email), id FROM users"
            " ON CONFLICT (email_lower) DO NOTHING"
        )
        user_ids = await main.fetchval(
            "SELECT setval('user_ids', greatest((SELECT coalesce(max(id), 1) FROM users),"
            " (SELECT last_value FROM user_ids)))"
        )
        order_ids = await main.fetchval(
            "SELECT setval('order_ids', greatest((SELECT coalesce(max(id), 1) FROM orders),"
            " (SELECT last_value FROM order_ids)))"
        )
    return {"directory_added": int(added.split()[-1]), "user_ids": user_ids, "order_ids_sequence": order_ids}


async def _verify(main: asyncpg.Connection, name: str, conn: asyncpg.Connection, args: Args) -> Any:
    sums = {}
    for table in TABLES:
        theirs, ours = await checksum(main, table, True, args), await checksum(conn, table, False, ())
        if theirs != ours:
            raise ClimbError(
                f"verify: {name} {table.name}: main's rows for it are {theirs[0]} (md5 {theirs[1]}),"
                f" the group has {ours[0]} (md5 {ours[1]})"
            )
        sums[table.name] = {"rows": theirs[0], "md5": theirs[1]}
    return sums


async def _verify_directory(main: asyncpg.Connection) -> None:
    missing = await main.fetchval(
        "SELECT count(*) FROM users u WHERE NOT EXISTS"
        " (SELECT 1 FROM user_directory d WHERE d.email_lower = lower(u.email) AND d.user_id = u.id)"
    )
    if missing:
        raise ClimbError(f"verify: user_directory: {missing} users lack their email entry (taken by another id?)")


async def finish(main_dsn: str) -> dict[str, Any]:
    """After the web tier runs sharded: empty main's old users, orders and items (the freeze stays)."""
    main = await asyncpg.connect(main_dsn, server_settings=UTC)
    try:
        await main.execute(RECORD)
        state = await main.fetchval("SELECT state FROM climb_adopt")
        if state is None:
            raise ClimbError("--finish: the adoption is not recorded as done: run `sample climb adopt-shards` first")
        step(ACTION, "finish")
        async with main.transaction():
            counts = {t: await main.fetchval(f"SELECT count(*) FROM {t}") for t in FROZEN}
            await main.execute("SET LOCAL sample.climb_bypass = 'on'")
            await main.execute("TRUNCATE order_items, orders, users")
            await main.execute("UPDATE climb_adopt SET state = 'finished'")
    finally:
        await main.close()
    return {"action": ACTION, "finished": True, "removed_from_main": counts}


async def unfreeze(main_dsn: str) -> dict[str, Any]:
    """Abandon the climb before the switch: main's tables take writes again, the record is cleared."""
    main = await asyncpg.connect(main_dsn, server_settings=UTC)
    try:
        await main.execute(RECORD)
        if await main.fetchval("SELECT state FROM climb_adopt") == "finished":
            raise ClimbError("--unfreeze: --finish already emptied main's users and orders; the groups hold them")
        step(ACTION, "unfreeze")
        lifted = await unfreeze_tables(main)
        await main.execute("DELETE FROM climb_adopt")
    finally:
        await main.close()
    return {"action": ACTION, "unfrozen": lifted}
