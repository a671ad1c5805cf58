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
4. catch-up:  rows added, changed or removed since the snapshot, found by per-row md5: main's rows as
              they map into the groups (one pass over each table for every group) against the rows the copy
              wrote (their md5s taken from the snapshot in step 2; the groups were empty after step 1).
              Only the rows that differ are read in full from main and upserted; those gone, deleted.
5. directory: `user_directory` gets every user's lower(email); `user_ids` and `order_ids` move past
              the copied ids (new orders: `n * 1024 + logical` with n > every old id).
6. verify:    per group per table, row count and an md5 over every row's md5 in key order, main's
              rows that map there against all of the group's rows; every user in the directory.
              The groups are read now, after catch-up wrote them (all at once, each its own server);
              main's side is the per-row md5s catch-up read, main being frozen since before that read.
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

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from sample.climb_cli import ClimbError
from sample.climb_database import freeze_tables, step, unfreeze_tables
from sample.shards import MAX_LOGICAL_SHARDS, ShardMap, latest_map

Key = tuple[Any, ...]
Sums = dict[str, dict[str, dict[Key, str]]]
"""Per group, per table: each row's md5 by its key (both as the group has them)."""
T = TypeVar("T")
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
    """A user-scoped table as the groups hold it: its key and columns. `from_main`: all of main's rows in
    that form ($1: L), the same column names, then `logical`, the logical shard (so the group) each lands in.
    `pick`: a condition on `from_main`'s own tables choosing the rows of the given keys ($2...: one array
    per key column), so that fetching a few rows does not read them all."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    from_main: str
    pick: str

    def __post_init__(self) -> None:
        assert self.columns[: len(self.key)] == self.key, "the key columns come first"

    @property
    def row(self) -> str:
        """A row's md5, in main (over `from_main`) and in a group (over the table) alike."""
        return "md5(ROW(" + ", ".join(f"t.{c}" for c in self.columns) + ")::text)"


USER_LOGICAL = "WITH s AS MATERIALIZED (SELECT id, shard_of(id, $1) AS logical FROM users)"
"""Each user's logical shard, hashed once per user rather than once per order or item."""


TABLES = (
    Table(
        "users",
        ("id",),
        ("id", "email", "name", "password_hash", "created_at"),
        "SELECT t.id, t.email, t.name, t.password_hash, t.created_at, shard_of(t.id, $1) AS logical FROM users t",
        "t.id = ANY($2::bigint[])",
    ),
    Table(
        "orders",
        ("id",),
        ("id", "user_id", "status", "total_cents", "created_at"),
        f"{USER_LOGICAL} SELECT t.id * {MAX_LOGICAL_SHARDS} + s.logical AS id, t.user_id, t.status, t.total_cents,"
        " t.created_at, s.logical FROM orders t JOIN s ON s.id = t.user_id",
        f"t.id = ANY(SELECT k / {MAX_LOGICAL_SHARDS} FROM unnest($2::bigint[]) AS u(k))",  # old id = new div 1024
    ),
    Table(
        "order_items",
        ("order_id", "product_id"),
        ("order_id", "product_id", "quantity", "price_cents"),
        f"{USER_LOGICAL} SELECT o.id * {MAX_LOGICAL_SHARDS} + s.logical AS order_id, i.product_id, i.quantity,"
        " i.price_cents, s.logical FROM order_items i JOIN orders o ON o.id = i.order_id JOIN s ON s.id = o.user_id",
        f"(i.order_id, i.product_id) IN"
        f" (SELECT k / {MAX_LOGICAL_SHARDS}, p FROM unnest($2::bigint[], $3::bigint[]) u(k, p))",
    ),
)


Rows = dict[str, list[tuple[tuple[Any, ...], str]]]
"""Per group: (some of a row's columns, the row's md5) of each row."""


async def _from_main(
    main: asyncpg.Connection, table: Table, current: ShardMap, what: tuple[str, ...], keys: list[Key] | None = None
) -> Rows:
    """Main's rows as they land in the groups, per group: `what` of each and its md5. All of them, in one
    pass over main's table for every group; or only those of `keys` (as the groups key them)."""
    sql = f"SELECT {', '.join(f't.{c}' for c in what)}, t.logical, {table.row} FROM ({table.from_main}"
    args: list[list[Any]] = []
    if keys is not None:
        sql += f" WHERE {table.pick}"
        args = [list(column) for column in zip(*keys, strict=True)]
    rows: Rows = {name: [] for name in current.groups}
    for *values, logical, row_md5 in await main.fetch(f"{sql}) t", current.logical_shards, *args):
        rows[current.group_of(logical)].append((tuple(values), row_md5))
    return rows


def _sums(table: Table, rows: list[tuple[tuple[Any, ...], str]]) -> dict[Key, str]:
    """Each row's md5 by its key (the first columns of `what`)."""
    return {values[: len(table.key)]: row_md5 for values, row_md5 in rows}


async def _main_sums(main: asyncpg.Connection, current: ShardMap) -> Sums:
    """Each of main's rows' md5 by key, per group and table: one pass over each table for every group, and
    only keys and md5s leave main."""
    sums: Sums = {name: {} for name in current.groups}
    for table in TABLES:
        for name, rows in (await _from_main(main, table, current, table.key)).items():
            sums[name][table.name] = _sums(table, rows)
    return sums


def checksum(sums: dict[Key, str]) -> tuple[int, str]:
    """(rows, md5 over every row's md5 in key order) of main's rows for a group, as `group_checksum` computes
    it in SQL over all of a group's rows (the keys are integers: Python sorts them as PostgreSQL does)."""
    if not sums:
        return 0, ""
    return len(sums), hashlib.md5("".join(sums[key] for key in sorted(sums)).encode()).hexdigest()


async def group_checksum(conn: asyncpg.Connection, table: Table) -> tuple[int, str]:
    """(rows, md5 over every row's md5 in key order) of all of a group's rows."""
    order = ", ".join(f"t.{k}" for k in table.key)
    what = f"count(*) AS n, coalesce(md5(string_agg({table.row}, '' ORDER BY {order})), '') AS sum"
    row = await conn.fetchrow(f"SELECT {what} FROM {table.name} t")
    return row["n"], row["sum"]


async def _each(
    groups: dict[str, asyncpg.Connection], work: Callable[[str, asyncpg.Connection], Awaitable[T]]
) -> dict[str, T]:
    """`work` on every group at once (each its own server); the results by group. A failure is raised (the
    first group's) only once every group's work has ended: nothing is left running on a connection."""
    results = await asyncio.gather(*(work(name, conn) for name, conn in groups.items()), return_exceptions=True)
    done: dict[str, T] = {}
    for name, result in zip(groups, results, strict=True):
        if isinstance(result, BaseException):
            raise result
        done[name] = result
    return done


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
    for conn in groups.values():  # every user and order a group holds is main's (so every item): the groups end empty
        async with conn.transaction():
            await conn.execute(
                "DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE user_id = ANY($1))", users
            )
            await conn.execute("DELETE FROM orders WHERE user_id = ANY($1)", users)
            await conn.execute("DELETE FROM users WHERE id = ANY($1)", users)
    step(ACTION, "copy")
    copied, was = await _copy(main, groups, current)
    step(ACTION, "freeze")
    await freeze_tables(main, FROZEN, REASON)
    frozen_at = time.monotonic()
    try:
        step(ACTION, "catch-up")
        now = await _main_sums(main, current)  # main is frozen: its final rows, for catch-up and verify alike
        caught_up = await _catch_up(main, groups, current, was, now)
        step(ACTION, "directory")
        directory = await _directory(main)
        step(ACTION, "verify")
        verified = await _each(groups, lambda name, conn: _verify(name, conn, now[name]))
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


async def _copy(
    main: asyncpg.Connection, groups: dict[str, asyncpg.Connection], current: ShardMap
) -> tuple[dict[str, dict[str, int]], Sums]:
    """Main's rows from one repeatable-read snapshot (an order's items come with it) into the groups, emptied
    by prepare; the counts, and each copied row's md5: the groups hold exactly those rows now."""
    async with main.transaction(isolation="repeatable_read", readonly=True):
        snapshot = {t.name: await _from_main(main, t, current, t.columns) for t in TABLES}

    async def copy(name: str, conn: asyncpg.Connection) -> dict[str, int]:
        async with conn.transaction():
            for table in TABLES:
                if rows := snapshot[table.name][name]:
                    records = [values for values, _ in rows]
                    await conn.copy_records_to_table(table.name, records=records, columns=list(table.columns))
        return {t.name: len(snapshot[t.name][name]) for t in TABLES}

    copied = await _each(groups, copy)
    return copied, {name: {t.name: _sums(t, snapshot[t.name][name]) for t in TABLES} for name in groups}


async def _catch_up(
    main: asyncpg.Connection, groups: dict[str, asyncpg.Connection], current: ShardMap, was: Sums, now: Sums
) -> dict[str, dict[str, int]]:
    """Per group, upsert main's rows that are new or changed since the snapshot (md5 `now` differs from `was`,
    what the copy wrote), then delete those main no longer has; only the rows that differ are read from main."""
    upserts: dict[str, dict[str, list[tuple[Any, ...]]]] = {name: {} for name in groups}
    deletes: dict[str, dict[str, list[Key]]] = {name: {} for name in groups}
    for table in TABLES:
        stale: list[Key] = []
        for name in groups:
            before, after = was[name][table.name], now[name][table.name]
            stale += [key for key, value in after.items() if before.get(key) != value]
            deletes[name][table.name] = [key for key in before if key not in after]
        rows = await _from_main(main, table, current, table.columns, stale) if stale else {}
        for name in groups:
            upserts[name][table.name] = [values for values, _ in rows.get(name, [])]

    async def write(name: str, conn: asyncpg.Connection) -> dict[str, int]:
        async with conn.transaction():
            for table in TABLES:
                if rows := upserts[name][table.name]:
                    values = ", ".join(f"${i}" for i in range(1, len(table.columns) + 1))
                    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in table.columns if c not in table.key)
                    await conn.executemany(
                        f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({values})"
                        f" ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}",
                        rows,
                    )
            for table in reversed(TABLES):
                if keys := deletes[name][table.name]:
                    match = " AND ".join(f"{k} = ${i}" for i, k in enumerate(table.key, 1))
                    await conn.executemany(f"DELETE FROM {table.name} WHERE {match}", keys)
        return {t.name: len(upserts[name][t.name]) + len(deletes[name][t.name]) for t in TABLES}

    return await _each(groups, write)


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


async def _verify(name: str, conn: asyncpg.Connection, main_sums: dict[str, dict[Key, str]]) -> Any:
    """The group's rows, read after catch-up wrote them, against main's rows for it (`main_sums`, read frozen)."""
    sums = {}
    for table in TABLES:
        theirs, ours = checksum(main_sums[table.name]), await group_checksum(conn, table)
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
