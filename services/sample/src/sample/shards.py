"""Shard routing: user id -> logical shard -> shard group, one Database per group, fenced writes, fan-out.

- `logical_shard(user_id, L)`: the first 4 bytes of sha256(user id as 8 big-endian bytes, two's
  complement), unsigned, mod L. The SQL function `shard_of(id, L)` (migration 101) computes the same.
- The shard map (JSON) sends each logical shard to a group and carries a version. Version 1 comes
  from the ConfigMap (`SHARD_MAP` or `SHARD_MAP_FILE`); `sample migrate` seeds the main group's
  `shard_map` table with it, and every later version (a move) is a row there. Each process reloads
  the newest row every `SHARD_MAP_REFRESH_SECONDS`.
- Order ids embed the logical shard: `sequence * MAX_LOGICAL_SHARDS + logical` (sequence `order_ids`
  in the main group), so `GET /orders/{id}` finds its group without a lookup.
- Writes are fenced: a write transaction on a group first takes the shared advisory lock of its
  logical shard and reads `shard_fence`; a move takes the exclusive lock to mark the shard `frozen`
  (writes answer 503 with Retry-After) and then `moved` (stale routers reload the map and retry).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import heapq
import itertools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from sample.config import ConfigError, Settings
from sample.db import Database, Transaction
from sample.errors import ApiError
from sample.failover import DatabaseUnavailable
from sample.secretfiles import PasswordFile, mask, secret_value

log = logging.getLogger(__name__)

MAX_LOGICAL_SHARDS = 1024
"""Upper bound of L; order ids reserve this many values per sequence number."""
HASH = "sha256-int8be-u32"
FENCE_LOCK_CLASS = 0x5CA1E5
"""First key of the two-key advisory lock a write (shared) and a move (exclusive) take per logical shard."""
RETRY_AFTER_SECONDS = 1
GROUP_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
T = TypeVar("T")


class ShardMapError(ValueError):
    """A shard map that does not hold together; the message names the key and the value."""


def logical_shard(user_id: int, logical_shards: int) -> int:
    """The logical shard of `user_id` among `logical_shards` (stable across processes and languages)."""
    digest = hashlib.sha256(user_id.to_bytes(8, "big", signed=True)).digest()
    return int.from_bytes(digest[:4], "big") % logical_shards


def order_id(sequence_value: int, logical: int) -> int:
    """An order id that carries its user's logical shard."""
    return sequence_value * MAX_LOGICAL_SHARDS + logical


def order_logical_shard(order: int) -> int:
    return order % MAX_LOGICAL_SHARDS


@dataclass(frozen=True)
class ShardMap:
    """Which group owns each logical shard, at one version."""

    version: int
    logical_shards: int
    groups: tuple[str, ...]
    assignment: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, source: str) -> ShardMap:
        """A map from its JSON text; ShardMapError names `source`, the key, the value and what is allowed."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ShardMapError(f"{source}: not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ShardMapError(f"{source}: got {type(raw).__name__}, allowed: a JSON object")
        return cls.from_dict(raw, source)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str) -> ShardMap:
        def bad(key: str, allowed: str) -> ShardMapError:
            return ShardMapError(f"{source}: {key}: got {raw.get(key)!r}, allowed: {allowed}")

        version, count = raw.get("version"), raw.get("logical_shards")
        groups, assignment = raw.get("groups"), raw.get("assignment")
        if raw.get("hash") != HASH:
            raise bad("hash", repr(HASH))
        if not isinstance(version, int) or version < 1:
            raise bad("version", "an integer >= 1")
        if not isinstance(count, int) or not 1 <= count <= MAX_LOGICAL_SHARDS:
            raise bad("logical_shards", f"an integer from 1 to {MAX_LOGICAL_SHARDS}")
        if (
            not isinstance(groups, list)
            or not groups
            or not all(isinstance(g, str) and GROUP_NAME.fullmatch(g) for g in groups)
        ):
            raise bad("groups", "a non-empty list of group names (DNS labels)")
        if not isinstance(assignment, list) or len(assignment) != count:
            raise bad("assignment", f"a list of {count} group names, one per logical shard")
        for logical, group in enumerate(assignment):
            if group not in groups:
                raise ShardMapError(f"{source}: assignment[{logical}]: got {group!r}, allowed: one of groups {groups}")
        return cls(version, count, tuple(groups), tuple(assignment))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "hash": HASH,
            "logical_shards": self.logical_shards,
            "groups": list(self.groups),
            "assignment": list(self.assignment),
        }

    def group_of(self, logical: int) -> str:
        return self.assignment[logical]

    def moved(self, logical: int, group: str) -> ShardMap:
        """The next version, with `logical` on `group` (added to `groups` when new)."""
        groups = self.groups if group in self.groups else (*self.groups, group)
        assignment = list(self.assignment)
        assignment[logical] = group
        return ShardMap(self.version + 1, self.logical_shards, groups, tuple(assignment))

    def owned(self) -> dict[str, list[int]]:
        """Logical shards per group, every group listed."""
        owned: dict[str, list[int]] = {group: [] for group in self.groups}
        for logical, group in enumerate(self.assignment):
            owned[group].append(logical)
        return owned


def rebalance(shard_map: ShardMap, new_group: str) -> list[int]:
    """Logical shards to move onto `new_group` so that it holds floor(L / groups) of them: one at a time
    from the group holding the most (highest logical shard first). Nothing else moves."""
    owned = shard_map.owned()
    owned.setdefault(new_group, [])
    target = shard_map.logical_shards // len(owned)
    moves: list[int] = []
    while len(owned[new_group]) < target:
        donor = max((g for g in owned if g != new_group), key=lambda g: (len(owned[g]), g))
        logical = owned[donor].pop()
        owned[new_group].append(logical)
        moves.append(logical)
    return moves


@dataclass(frozen=True)
class GroupSettings:
    name: str
    url: str
    replica_urls: tuple[str, ...]


@dataclass(frozen=True)
class ShardSettings:
    """The environment's shard groups and initial map; `None` from `shard_settings` when SHARD_GROUPS is unset."""

    groups: tuple[GroupSettings, ...]
    initial_map: ShardMap
    refresh_seconds: float
    admin_token: str

    def names(self) -> list[str]:
        return [group.name for group in self.groups]


def _dsn(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


def shard_settings(env: Mapping[str, str]) -> ShardSettings | None:
    """SHARD_GROUPS, SHARD_<i>_URL, SHARD_<i>_REPLICA_URLS, SHARD_<i>_PASSWORD_FILE (its password goes into
    both), SHARD_MAP or SHARD_MAP_FILE, SHARD_MAP_REFRESH_SECONDS, ADMIN_TOKEN or ADMIN_TOKEN_FILE;
    ConfigError lists every bad variable."""
    names = [n.strip() for n in env.get("SHARD_GROUPS", "").split(",") if n.strip()]
    if not names:
        return None
    problems: list[str] = []
    if len(set(names)) != len(names) or not all(GROUP_NAME.fullmatch(n) for n in names):
        problems.append(
            f"SHARD_GROUPS: got {env['SHARD_GROUPS']!r}, allowed: distinct group names (DNS labels), comma-separated"
        )
    groups = []
    for index, name in enumerate(names):
        url = env.get(f"SHARD_{index}_URL", "").strip()
        replicas = tuple(u.strip() for u in env.get(f"SHARD_{index}_REPLICA_URLS", "").split(",") if u.strip())
        password = PasswordFile(env, f"SHARD_{index}_PASSWORD_FILE", problems)
        if _dsn(url):
            url = password.insert(f"SHARD_{index}_URL", url, problems)
        else:
            problems.append(
                f"SHARD_{index}_URL: got {mask(url)!r}, allowed: a DSN postgresql://user:pass@host:port/db"
                f" (group {name})"
            )
        if all(_dsn(u) for u in replicas):
            replicas = tuple(password.insert(f"SHARD_{index}_REPLICA_URLS", u, problems) for u in replicas)
        else:
            problems.append(
                f"SHARD_{index}_REPLICA_URLS: got {mask(env[f'SHARD_{index}_REPLICA_URLS'])!r},"
                " allowed: comma-separated postgresql:// DSNs"
            )
        groups.append(GroupSettings(name, url, replicas))
    initial = None
    try:
        initial = _initial_map(env)
        if missing := sorted(set(initial.groups) - set(names)):
            problems.append(f"SHARD_MAP: groups {missing} are not in SHARD_GROUPS ({','.join(names)})")
    except ShardMapError as exc:
        problems.append(str(exc))
    raw_refresh = env.get("SHARD_MAP_REFRESH_SECONDS", "2")
    try:
        refresh = float(raw_refresh)
        if not 0.05 <= refresh <= 60:
            raise ValueError
    except ValueError:
        problems.append(f"SHARD_MAP_REFRESH_SECONDS: got {raw_refresh!r}, allowed: 0.05 to 60 seconds")
        refresh = 0.0
    admin_token = secret_value(env, "ADMIN_TOKEN", "the token", problems)
    if problems or initial is None:
        raise ConfigError.listing(problems)
    return ShardSettings(tuple(groups), initial, refresh, admin_token)


def _initial_map(env: Mapping[str, str]) -> ShardMap:
    if "SHARD_MAP" in env:
        return ShardMap.parse(env["SHARD_MAP"], "SHARD_MAP")
    path = env.get("SHARD_MAP_FILE", "")
    if not path:
        raise ShardMapError("SHARD_MAP: not set, allowed: the shard map JSON (or SHARD_MAP_FILE: its path)")
    try:
        return ShardMap.parse(Path(path).read_text(), f"SHARD_MAP_FILE {path}")
    except OSError as exc:
        raise ShardMapError(f"SHARD_MAP_FILE: got {path!r}, allowed: a readable file ({exc.strerror})") from None


class ShardMoving(ApiError):
    """The logical shard is read-only while a move copies its last changes: 503 with Retry-After."""

    def __init__(self, logical: int, group: str) -> None:
        super().__init__(
            503,
            "shard_moving",
            f"user: logical shard {logical} on {group} is read-only while it moves, retry shortly",
            {"retry-after": str(RETRY_AFTER_SECONDS)},
        )


class ShardMoved(Exception):
    """The group no longer owns the logical shard: this process's map is stale."""


async def latest_map(conn: asyncpg.Connection | asyncpg.Pool) -> ShardMap | None:
    row = await conn.fetchrow("SELECT map::text FROM shard_map ORDER BY version DESC LIMIT 1")
    return None if row is None else ShardMap.parse(row[0], "shard_map table")


async def seed_map(conn: asyncpg.Connection, initial: ShardMap, groups: Iterable[str]) -> ShardMap:
    """Store `initial` as version 1 unless a map is there; returns the newest map, checked against `groups`."""
    await conn.execute(
        "INSERT INTO shard_map (version, map) SELECT $1, $2::jsonb WHERE NOT EXISTS (SELECT 1 FROM shard_map)",
        initial.version,
        json.dumps(initial.to_dict()),
    )
    current = await latest_map(conn)
    assert current is not None
    if missing := sorted(set(current.groups) - set(groups)):
        raise ConfigError(f"SHARD_GROUPS: lacks {missing}, which shard map version {current.version} still uses")
    return current


class Shards:
    """One Database per shard group, the current map (refreshed from the main group), fenced writes and fan-out."""

    def __init__(self, settings: Settings, shards: ShardSettings, main: Database) -> None:
        self.config = shards
        self.main = main
        self.map = shards.initial_map
        self.groups = {
            group.name: Database(
                dataclasses.replace(settings, database_url=group.url, database_replica_urls=group.replica_urls)
            )
            for group in shards.groups
        }
        self._refresh_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open every group's pools (after the main group's), load the newest map, start reloading it."""
        await asyncio.gather(*(db.open() for db in self.groups.values()))
        await self.refresh()
        self._refresh_task = asyncio.create_task(self._refresh_loop())

    async def close(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        await asyncio.gather(*(db.close() for db in self.groups.values()), return_exceptions=True)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_seconds)
            try:
                await self.refresh()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ShardMapError, DatabaseUnavailable) as exc:
                log.warning("shard map not reloaded, keeping version %s", self.map.version, extra={"error": str(exc)})

    async def refresh(self) -> None:
        found = await self.main.read_primary(latest_map)  # a failover: 503, and the loop keeps the map
        if found is not None and found.version > self.map.version:
            unknown = sorted(set(found.groups) - set(self.groups))
            if unknown:
                raise ShardMapError(
                    f"shard map version {found.version} uses groups {unknown} this process has no URL for"
                )
            log.info("shard map version %s", found.version)
            self.map = found
        elif found is not None and found.version < self.map.version:
            self.map = found  # the table is the source of truth

    def logical_of_user(self, user_id: int) -> int:
        return logical_shard(user_id, self.map.logical_shards)

    def db_of(self, logical: int) -> Database:
        return self.groups[self.map.group_of(logical)]

    async def write(self, logical: int, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run `work` in a transaction on the group owning `logical`, behind its fence.

        A frozen shard answers 503 (ShardMoving); a shard this group gave away reloads the map and
        runs `work` once more on the new owner.
        """
        for attempt in range(2):
            group = self.map.group_of(logical)
            try:
                async with self.groups[group].transaction() as tx:
                    await tx.fetch("SELECT pg_advisory_xact_lock_shared($1::int, $2::int)", FENCE_LOCK_CLASS, logical)
                    fence = await tx.fetchrow("SELECT state FROM shard_fence WHERE logical = $1", logical)
                    if fence is not None and fence["state"] == "frozen":
                        raise ShardMoving(logical, group)
                    if fence is not None:
                        raise ShardMoved
                    return await work(tx)
            except ShardMoved:
                log.info("logical shard %s left %s, reloading the shard map", logical, group)
                await self.refresh()
                if attempt:
                    raise ShardMoving(logical, group) from None
        raise AssertionError("unreachable")

    async def fan_out(self, query: Callable[[Database], Awaitable[T]]) -> list[T]:
        """`query` on every group at once, results in group order."""
        return list(await asyncio.gather(*(query(db) for db in self.groups.values())))


def merge_newest_first(pages: Iterable[list[asyncpg.Record]], limit: int) -> list[asyncpg.Record]:
    """The `limit` highest ids over per-group pages that are each sorted by id descending: a k-way merge.

    Each group returned its own `limit` newest rows below the cursor, so the global `limit` newest
    are among them, and the next page (ids below the last one returned) loses and repeats nothing.
    """
    merged = heapq.merge(*pages, key=lambda row: row["id"], reverse=True)
    return list(itertools.islice(merged, limit))
