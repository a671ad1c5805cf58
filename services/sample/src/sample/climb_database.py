"""1 -> 2: `sample climb copy-database`, the in-pod Postgres of phase 1 into the StatefulSet of phase 2.

Run with the phase-2 migration Job's env: DATABASE_URL is the (empty, `sample migrate`d) target,
CLIMB_SOURCE_DATABASE_URL the phase-1 database, both with DATABASE_PASSWORD_FILE's password.

A short write freeze, not logical replication: a publication needs `wal_level=logical` on the old
server, i.e. a restart of the only database phase 1 has, and the sample's data is small enough to
copy in seconds. Steps (each logged as `{"msg": "climb step", "step": ...}` before it starts):

1. freeze:  a statement trigger on every copied table (`climb_frozen`, BEFORE INSERT, UPDATE, DELETE,
            TRUNCATE) raises SQLSTATE 25006 read_only_sql_transaction with a message saying why. It
            is created under SHARE ROW EXCLUSIVE locks in one transaction, so it waits for the writes
            in flight, and every later write of any session (pooled ones included) fails. The service
            answers 25006 with 503 `database_unavailable` and Retry-After: 1; reads keep working.
            Not `ALTER DATABASE ... SET default_transaction_read_only = on` plus terminating the other
            backends: tried first, the service's DSN asks for `target_session_attrs=read-write`, so
            its new connections to a read-only-by-default database were refused and its *reads*
            failed too, and an idle pooled connection ended under it surfaced as asyncpg's
            InternalClientError, a 500.
2. copy:    every table of schema public (but `schema_migrations`, which `sample migrate` made on the
            target), from one snapshot of the source: the target's tables are truncated, then filled
            with binary COPY in foreign-key order, in one transaction; every sequence is set to the source's.
3. verify:  per table, row count and an md5 over every row's md5 in primary-key order, both sides,
            and every sequence's position. A difference unfreezes the source and fails.
4. record:  the report goes into the target's `climb_copy` table.

A crash at any step (even SIGKILL) leaves the source frozen or not yet frozen, and the target
without a record: run the command again, it copies everything over again. A run after the record
only re-verifies the (still frozen) source against the recorded checksums, and never unfreezes it
(nor compares the target, which the new rung may have written to); when the source is gone (the
phase-1 pod deleted) it prints the recorded report, saying it could not re-verify.

After success the source **stays frozen**: the web tier switches to the target next (phase 2's
`pulumi up`), and the phase-1 pod with its database is deleted after. `frozen_ms` in the report is
how long writes were refused until the copy was verified; they stay refused until the switch.
`--unfreeze` gives the source its writes back when the operator abandons the climb, and clears the
target's record (a later copy starts over).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from sample.climb_cli import ClimbError

log = logging.getLogger("sample.climb")

COPY_LOCK = 0x5CA1E7
"""One copy at a time: a session advisory lock on the target."""
SAME_TEXT = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
}
"""Row text is compared across servers: both sides render values alike."""
SKIPPED = ("schema_migrations", "climb_copy")
RECORD = """
CREATE TABLE IF NOT EXISTS climb_copy (
    id      integer PRIMARY KEY CHECK (id = 1),   -- one row: the copy is done
    report  jsonb NOT NULL,
    done_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    parents: tuple[str, ...]

    @property
    def quoted(self) -> str:
        return f"public.{_ident(self.name)}"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def step(action: str, name: str, **extra: Any) -> None:
    """The log line a step starts with (a crash test kills the process when it sees one)."""
    log.info("climb step", extra={"action": action, "step": name, **extra})


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings=SAME_TEXT)


async def tables(conn: asyncpg.Connection) -> list[Table]:
    """The ordinary tables of schema public but SKIPPED, parents before children (foreign keys)."""
    rows = await conn.fetch(
        """
        SELECT c.relname AS name,
               array(SELECT a.attname FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                     ORDER BY a.attnum) AS columns,
               coalesce(array(SELECT a.attname FROM pg_index i
                              JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true
                              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                              WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.n), '{}') AS key,
               array(SELECT DISTINCT p.relname FROM pg_constraint f JOIN pg_class p ON p.oid = f.confrelid
                     WHERE f.conrelid = c.oid AND f.contype = 'f' AND f.confrelid <> c.oid) AS parents
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
        ORDER BY c.relname
        """
    )
    found = {
        r["name"]: Table(r["name"], tuple(r["columns"]), tuple(r["key"]), tuple(r["parents"]))
        for r in rows
        if r["name"] not in SKIPPED
    }
    ordered: list[Table] = []
    placed: set[str] = set()
    while len(ordered) < len(found):
        ready = [t for t in found.values() if t.name not in placed and set(t.parents) & set(found) <= placed]
        if not ready:  # a cycle of foreign keys: keep the name order for the rest
            ready = [t for t in found.values() if t.name not in placed]
        for table in ready:
            ordered.append(table)
            placed.add(table.name)
    return ordered


async def sequences(conn: asyncpg.Connection) -> dict[str, tuple[int, bool]]:
    """(last_value, is_called) of every sequence of schema public."""
    names = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY 1"
    )
    positions = {}
    for (name,) in names:
        row = await conn.fetchrow(f"SELECT last_value, is_called FROM public.{_ident(name)}")
        assert row is not None
        positions[name] = (row["last_value"], row["is_called"])
    return positions


async def checksum(conn: asyncpg.Connection, table: Table) -> tuple[int, str]:
    """(rows, md5 over every row's md5 in key order) of `table`."""
    order = ", ".join(f"t.{_ident(k)}" for k in table.key) or "t::text"
    row_text = "ROW(" + ", ".join(f"t.{_ident(c)}" for c in table.columns) + ")::text"
    found = await conn.fetchrow(
        f"SELECT count(*) AS n, coalesce(md5(string_agg(md5({row_text}), '' ORDER BY {order})), '') AS sum"
        f" FROM {table.quoted} t"
    )
    assert found is not None
    return found["n"], found["sum"]


FREEZE_FUNCTION = """
CREATE OR REPLACE FUNCTION climb_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('sample.climb_bypass', true) = 'on' THEN  -- the climb's own clean-up
        RETURN NULL;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'read_only_sql_transaction',
        MESSAGE = format('%s is read-only: %s', TG_TABLE_NAME, TG_ARGV[0]);
END $$"""


async def freeze_tables(conn: asyncpg.Connection, names: list[str], reason: str) -> None:
    """Every write to `names` (INSERT, UPDATE, DELETE, TRUNCATE) fails with SQLSTATE 25006 and `reason`.

    One transaction: the SHARE ROW EXCLUSIVE locks wait for every write in flight on these tables,
    and every write after the commit meets the statement trigger (in any session, old or new)."""
    async with conn.transaction():
        await conn.execute(FREEZE_FUNCTION)
        if not names:
            return
        await conn.execute(f"LOCK TABLE {', '.join(f'public.{_ident(n)}' for n in names)} IN SHARE ROW EXCLUSIVE MODE")
        for name in names:
            table = f"public.{_ident(name)}"
            await conn.execute(f"DROP TRIGGER IF EXISTS climb_frozen ON {table}")
            await conn.execute(
                f"CREATE TRIGGER climb_frozen BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION climb_frozen({_literal(reason)})"
            )


async def unfreeze_tables(conn: asyncpg.Connection) -> list[str]:
    """Drop every freeze trigger of schema public; the tables it was on."""
    names: list[str] = [
        row[0]
        for row in await conn.fetch(
            "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE t.tgname = 'climb_frozen' AND n.nspname = 'public' ORDER BY 1"
        )
    ]
    async with conn.transaction():
        for name in names:
            await conn.execute(f"DROP TRIGGER IF EXISTS climb_frozen ON public.{_ident(name)}")
    return names


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


FROZEN_REASON = "the database is being copied to the next rung (sample climb copy-database), retry shortly"


async def freeze(source: asyncpg.Connection, found: list[Table]) -> None:
    await freeze_tables(source, [t.name for t in found], FROZEN_REASON)


async def _unfreeze(source: asyncpg.Connection) -> None:
    await unfreeze_tables(source)


async def _copy(source: asyncpg.Connection, target: asyncpg.Connection, found: list[Table]) -> dict[str, int]:
    """Every table from one snapshot of the source into the emptied target tables; sequences alike."""
    copied: dict[str, int] = {}
    async with target.transaction():
        if found:
            await target.execute("TRUNCATE " + ", ".join(t.quoted for t in found))
        async with source.transaction(isolation="repeatable_read", readonly=True):
            for table in found:
                columns = list(table.columns)
                with tempfile.TemporaryFile() as buffer:
                    await source.copy_from_table(
                        table.name, schema_name="public", columns=list(table.columns), output=buffer, format="binary"
                    )
                    buffer.seek(0)
                    try:
                        status = await target.copy_to_table(
                            table.name, schema_name="public", columns=columns, source=buffer, format="binary"
                        )
                    except asyncpg.PostgresError as exc:
                        raise ClimbError(f"copy: table {table.name}: the target refused a row: {exc.message}") from exc
                copied[table.name] = int(status.split()[-1])
            positions = await sequences(source)
        for name, (value, called) in positions.items():
            await target.execute("SELECT setval($1::regclass, $2, $3)", f"public.{_ident(name)}", value, called)
    return copied


async def _verify(source: asyncpg.Connection, target: asyncpg.Connection, found: list[Table]) -> dict[str, Any]:
    sums: dict[str, Any] = {}
    for table in found:
        theirs, ours = await checksum(source, table), await checksum(target, table)
        if theirs != ours:
            raise ClimbError(
                f"verify: table {table.name}: source has {theirs[0]} rows (md5 {theirs[1]}),"
                f" target {ours[0]} rows (md5 {ours[1]})"
            )
        sums[table.name] = {"rows": theirs[0], "md5": theirs[1]}
    theirs_seq, ours_seq = await sequences(source), await sequences(target)
    for name, position in theirs_seq.items():
        if ours_seq.get(name) != position:
            raise ClimbError(f"verify: sequence {name}: source at {position}, target at {ours_seq.get(name)}")
    return sums


async def copy_database(source_dsn: str, target_dsn: str) -> dict[str, Any]:
    """Freeze, copy, verify, record; the report. ClimbError (source unfrozen) when it did not verify."""
    action = "copy-database"
    target = await _connect(target_dsn)
    try:
        if not await target.fetchval("SELECT pg_try_advisory_lock($1)", COPY_LOCK):
            raise ClimbError("another copy-database is running (advisory lock on the target); retry when it ends")
        await target.execute(RECORD)
        done = await target.fetchval("SELECT report::text FROM climb_copy")
        try:
            source = await _connect(source_dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            if done is None:
                raise
            # recorded, and the old rung is gone (its pod deleted after the switch): nothing to re-verify
            return {**json.loads(done), "already_done": True, "reverified": f"no: the source is unreachable ({exc})"}
        try:
            return await _copy_database(action, source, target, done)
        finally:
            await source.close()
    finally:
        await target.close()


async def _copy_database(
    action: str, source: asyncpg.Connection, target: asyncpg.Connection, done: str | None
) -> dict[str, Any]:
    found = await tables(source)
    if done is not None:
        step(action, "reverify")
        return await _reverify(source, found, done)
    missing = sorted({t.name for t in found} - {t.name for t in await tables(target)})
    if missing:
        raise ClimbError(f"the target lacks tables {missing}: run `sample migrate` on DATABASE_URL first")
    step(action, "freeze")
    await freeze(source, found)
    frozen_at = time.monotonic()
    try:
        step(action, "copy")
        copied = await _copy(source, target, found)
        step(action, "verify")
        sums = await _verify(source, target, found)
    except Exception as exc:
        try:
            await _unfreeze(source)
        except Exception as again:
            raise ClimbError(f"{exc}; unfreezing the source failed too ({again}): run --unfreeze") from exc
        raise ClimbError(f"{exc}; the source takes writes again, the climb did not happen") from exc
    frozen_ms = round((time.monotonic() - frozen_at) * 1000, 1)
    report = {
        "action": action,
        "tables": {name: {**sums[name], "copied": copied[name]} for name in sums},
        "sequences": {name: value for name, (value, _) in (await sequences(target)).items()},
        "frozen_ms": frozen_ms,
        "source": "frozen until the web tier switches to the target",
    }
    step(action, "record")
    await target.execute(
        "INSERT INTO climb_copy (id, report) VALUES (1, $1::jsonb)"
        " ON CONFLICT (id) DO UPDATE SET report = EXCLUDED.report, done_at = now()",
        _json(report),
    )
    return report


async def _reverify(source: asyncpg.Connection, found: list[Table], done: str) -> dict[str, Any]:
    """The copy is recorded: the source (still frozen) must still match the recorded checksums."""
    report: dict[str, Any] = json.loads(done)
    for table in found:
        now = await checksum(source, table)
        recorded = report["tables"].get(table.name, {})
        if (recorded.get("rows"), recorded.get("md5")) != now:
            raise ClimbError(
                f"reverify: the copy is recorded, but the source's table {table.name} now has {now[0]} rows"
                f" (md5 {now[1]}), recorded {recorded.get('rows')} (md5 {recorded.get('md5')}): it took writes"
                " after the copy; the source was left as it is"
            )
    return {**report, "already_done": True, "reverified": "yes: the source still matches the recorded checksums"}


async def unfreeze(source_dsn: str, target_dsn: str) -> dict[str, Any]:
    """Give the source its writes back and clear the target's record (a later copy starts over)."""
    step("copy-database", "unfreeze")
    source = await _connect(source_dsn)
    try:
        await _unfreeze(source)
    finally:
        await source.close()
    try:
        target = await _connect(target_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        return {"action": "copy-database", "unfrozen": True, "target_record": f"not cleared ({exc})"}
    try:
        await target.execute(RECORD)
        cleared = await target.execute("DELETE FROM climb_copy")
    finally:
        await target.close()
    record = "cleared" if cleared.endswith(" 1") else "none"
    return {"action": "copy-database", "unfrozen": True, "target_record": record}


def _json(value: Any) -> str:
    return json.dumps(value, default=str)
