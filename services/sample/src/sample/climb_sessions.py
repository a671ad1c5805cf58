"""`sample climb move-sessions`: 3 -> 4, sessions and rate-limit state from the standalone Redis into the cluster.

The kit runs it as a Job from the sample image with the phase-4 env (REDIS_URL the cluster's seed,
REDIS_MODE=cluster, REDIS_PASSWORD_FILE) plus CLIMB_SOURCE_REDIS_URL, the phase-3 standalone, which gets
the same password (both rungs mount the `redis` Secret). The sequence:

1. `sample climb move-sessions` while the phase-3 web still serves from the standalone: copies every
   session and rate-limit key (may be run again just before the rollout; each pass is incremental);
2. the web tier rolls to the cluster;
3. `sample climb move-sessions --final` once the phase-3 web is gone: copies what was created on the
   standalone meanwhile, brings the earlier copies up to date, and verifies every key.

What moves: `session:*` (DUMP + PTTL, RESTORE with the remaining TTL; a key that expires meanwhile is
skipped) and `ratelimit:*`. Cache entries and everything else are not copied: the cluster fills its
cache from Postgres, and events are not carried over.

Every key copied is remembered on the target, in the hash `{climb}:copied` (one slot): key -> the
copy's absolute expiry (PEXPIRETIME, ms). A later pass never copies a remembered key again, so a
session a user logged out of on the cluster stays deleted. A remembered key whose expiry on the target
is still the remembered one was not touched on the target since; only such a key is brought up to date
from the standalone (a session used there got a longer TTL, a rate-limit hash new counts), and a session
gone from the standalone (its user logged out there after the copy) is deleted on the target too. Each
of these is one script on the key's own node, so a request on the cluster in between is never undone.

Every copy is verified: the value read on the target equals the value read on the standalone in the
same MULTI as its DUMP. `--final` also checks that every session and rate-limit key on the standalone
is remembered, and compares the value of every remembered session present on both. Resumable after a
crash at any step: RESTORE comes before remembering; an unremembered key found on the target is replaced
before the rollout (only copies are there) and kept by --final (a crashed run's copy, or the cluster's
newer rate-limit state; a session's value is compared). Each step is logged as a JSON line (`step`: read, restored,
recorded, reconciled, verified); success prints a one-line JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sample.config import ConfigError, Settings
from sample.secretfiles import mask, other_url

if TYPE_CHECKING:  # redis is imported when the move runs: every `sample` command imports this module
    from sample.redisconn import RedisClient

log = logging.getLogger("sample.climb.sessions")

SOURCE_VARIABLE = "CLIMB_SOURCE_REDIS_URL"
SOURCE_ALLOWED = (
    "the phase-3 standalone Redis, redis://host:port[/db] or rediss://, without a password"
    " (REDIS_PASSWORD_FILE's goes into it), another server than REDIS_URL"
)
TARGET_ALLOWED = "the phase-4 Redis, redis://host:port[/db] (the cluster's seed with REDIS_MODE=cluster)"

KINDS = {"session:": "sessions", "ratelimit:": "ratelimits"}
"""Key prefix -> kind; any other key (cache entries, event streams, totals) is not copied."""
COPIED = "{climb}:copied"
COPIED_KEEP_SECONDS = 30 * 86400
"""After --final the record expires after the longest SESSION_TTL_SECONDS: by then every copied key is gone."""
DEFAULT_BATCH = 500
FINAL_ROUNDS = 3
NOT_COPIED = "cache entries and any other keys: the cluster refills its cache from Postgres"

# KEYS[1]; ARGV: ttl ms (0: none), DUMP payload, "1" to replace. Returns {1 restored | 0 already there, PEXPIRETIME}.
RESTORE = """
local ok = ARGV[3] == '1' and redis.pcall('RESTORE', KEYS[1], ARGV[1], ARGV[2], 'REPLACE')
  or redis.pcall('RESTORE', KEYS[1], ARGV[1], ARGV[2])
local restored = 1
if type(ok) == 'table' and ok.err then
  if string.sub(ok.err, 1, 7) ~= 'BUSYKEY' then return redis.error_reply(ok.err) end
  restored = 0
end
return {restored, redis.call('PEXPIRETIME', KEYS[1])}
"""

# KEYS[1]; ARGV: remembered PEXPIRETIME, ttl ms, DUMP payload. Replaces the key only when nothing touched it on the
# target since it was remembered. Returns the new PEXPIRETIME, or -3 when the key was touched (or is gone).
REFRESH = """
if redis.call('PEXPIRETIME', KEYS[1]) ~= tonumber(ARGV[1]) then return -3 end
redis.call('RESTORE', KEYS[1], ARGV[2], ARGV[3], 'REPLACE')
return redis.call('PEXPIRETIME', KEYS[1])
"""

# KEYS[1]; ARGV: remembered PEXPIRETIME. Deletes the key only when nothing touched it on the target since. 1 or 0.
REVOKE = """
if redis.call('PEXPIRETIME', KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
return redis.call('DEL', KEYS[1])
"""

GONE = -2
"""The remembered expiry of a key that was gone (expired, deleted) when it was last looked at."""


class SessionMoveError(Exception):
    """The move did not verify or cannot run; the message says which key and why. The standalone is never written."""


@dataclass
class Counts:
    """Keys of one kind in this run."""

    scanned: int = 0
    copied: int = 0
    """restored on the target by this run"""
    already_copied: int = 0
    """remembered by an earlier pass (or run): not copied again"""
    adopted: int = 0
    """found on the target unremembered (a run that crashed after RESTORE, or state the cluster made): kept"""
    skipped_expired: int = 0
    verified: int = 0
    refreshed: int = 0
    """remembered, untouched on the target, changed on the standalone: brought up to date"""
    revoked: int = 0
    """sessions deleted on the standalone after their copy (a logout there): deleted on the target too"""
    remembered: int = 0
    """keys of this kind in the record after the run (every pass so far)"""
    on_target: int = 0
    """remembered and present on the target; for sessions present on both, with equal values"""
    gone_on_target: int = 0
    """remembered but gone on the target (expired, or logged out there): not copied again"""

    def add(self, other: Counts) -> None:
        """The copies of a later round of the same run (not its scan: those keys were counted)."""
        for name in ("copied", "adopted", "skipped_expired", "verified"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class Shot:
    """One key as read on the standalone."""

    payload: bytes
    """b"" when the key is gone"""
    pttl: int
    deadline: int
    value: Any

    @property
    def gone(self) -> bool:
        return not self.payload or self.pttl == -2


@dataclass
class Run:
    final: bool
    batch: int
    counts: dict[str, Counts] = field(default_factory=lambda: {kind: Counts() for kind in KINDS.values()})
    other: int = 0

    def report(self, elapsed_ms: int) -> dict[str, Any]:
        return {
            "action": "move-sessions",
            "final": self.final,
            **{kind: asdict(counts) for kind, counts in self.counts.items()},
            "not_copied": {"keys": self.other, "what": NOT_COPIED},
            "elapsed_ms": elapsed_ms,
        }


def kind_of(key: str) -> str | None:
    return next((kind for prefix, kind in KINDS.items() if key.startswith(prefix)), None)


def step(name: str, **fields: Any) -> None:
    log.info(f"move-sessions: {name}", extra={"step": name, **fields})


# --- configuration -----------------------------------------------------------------------------------------------


def source_redis_url(env: Mapping[str, str], settings: Settings) -> str:
    """CLIMB_SOURCE_REDIS_URL with REDIS_PASSWORD_FILE's password in it; ConfigError naming each problem."""
    problems: list[str] = []
    if not settings.redis_url:
        problems.append(f"REDIS_URL: not set, allowed: {TARGET_ALLOWED} (required by sample climb move-sessions)")
    schemes = ("redis://", "rediss://")
    target = ("REDIS_URL", settings.redis_url)
    url = other_url(env, SOURCE_VARIABLE, schemes, SOURCE_ALLOWED, "REDIS_PASSWORD_FILE", target, problems)
    if problems:
        raise ConfigError.listing(problems)
    return url


# --- the move ----------------------------------------------------------------------------------------------------


async def move_sessions(
    source_url: str, target_url: str, target_mode: str, *, final: bool, batch: int = DEFAULT_BATCH
) -> dict[str, Any]:
    """One pass (see the module's docstring); the report, or SessionMoveError."""
    from sample.redisconn import connect

    started = time.monotonic()
    run = Run(final, batch)
    source = connect(source_url, "standalone")
    target = connect(target_url, target_mode)
    try:
        step("start", final=final, source=mask(source_url), target=mask(target_url), mode=target_mode)
        await copy_round(source, target, run)
        await reconcile(source, target, run)
        step("reconciled", **{kind: counts.refreshed + counts.revoked for kind, counts in run.counts.items()})
        await verify(source, target, run)
        if final:
            await target.expire(COPIED, COPIED_KEEP_SECONDS)
        step("verified", **{kind: counts.on_target for kind, counts in run.counts.items()})
    finally:
        await source.aclose()
        await target.aclose()
    return run.report(round((time.monotonic() - started) * 1000))


async def scan_batches(source: RedisClient, run: Run) -> AsyncIterator[list[tuple[str, str]]]:
    """(kind, key) batches of the sessions and rate-limit keys on the standalone; counts the others."""
    pending: list[tuple[str, str]] = []
    async for raw in source.scan_iter(count=1000):
        key = raw.decode(errors="replace")  # the keys moved are ASCII; another key is only counted
        kind = kind_of(key)
        if kind is None:
            run.other += 1
            continue
        pending.append((kind, key))
        if len(pending) >= run.batch:
            yield pending
            pending = []
    if pending:
        yield pending


async def copy_round(source: RedisClient, target: RedisClient, run: Run) -> int:
    """Copies every session and rate-limit key not remembered yet; how many keys were not remembered."""
    unremembered = 0
    async for found in scan_batches(source, run):
        marks = await target.hmget(COPIED, [key for _, key in found])
        todo = []
        for (kind, key), mark in zip(found, marks, strict=True):
            run.counts[kind].scanned += 1
            if mark is None:
                todo.append((kind, key))
            else:
                run.counts[kind].already_copied += 1
        unremembered += len(todo)
        if todo:
            await copy_batch(source, target, run, todo)
    return unremembered


async def snapshot(source: RedisClient, keys: list[tuple[str, str]]) -> list[Shot]:
    """DUMP payload, PTTL, PEXPIRETIME and value of each key, read in one MULTI: the value is the payload's."""
    pipe = source.pipeline(transaction=True)
    for kind, key in keys:
        pipe.dump(key)
        pipe.pttl(key)
        pipe.pexpiretime(key)
        read_value(pipe, kind, key)
    results = await pipe.execute(raise_on_error=False)
    for result in results:
        if isinstance(result, Exception):
            raise SessionMoveError(f"reading the standalone: {result}")
    return [
        Shot(results[i] or b"", int(results[i + 1]), int(results[i + 2]), results[i + 3])
        for i in range(0, len(results), 4)
    ]


def read_value(pipe: Any, kind: str, key: str) -> None:
    if kind == "sessions":
        pipe.get(key)
    else:
        pipe.hgetall(key)


async def copy_batch(source: RedisClient, target: RedisClient, run: Run, todo: list[tuple[str, str]]) -> None:
    step("read", keys=len(todo))
    shots = await snapshot(source, todo)
    live = []
    for (kind, key), shot in zip(todo, shots, strict=True):
        if shot.gone:
            run.counts[kind].skipped_expired += 1
        else:
            live.append((kind, key, shot))
    pipe = target.pipeline()
    for _, key, shot in live:
        # before the rollout the target holds only copies (REPLACE an unremembered one: a crashed run's, older);
        # after it (--final) a key there is the cluster's own state or a crashed run's copy: keep it
        pipe.eval(RESTORE, 1, key, max(shot.pttl, 0), shot.payload, "0" if run.final else "1")
    restored = await pipe.execute()
    step("restored", keys=len(live))
    pipe = target.pipeline()
    for kind, key, _ in live:
        read_value(pipe, kind, key)
    on_target = await pipe.execute()
    remember: dict[Any, int] = {}
    for (kind, key, shot), (fresh, deadline), now in zip(live, restored, on_target, strict=True):
        counts = run.counts[kind]
        if not now:  # gone on the target already: expired within the copy, or deleted there (--final)
            remember[key] = GONE
            if not await source.exists(key):
                counts.skipped_expired += 1
            elif run.final:
                counts.gone_on_target += 1
            else:
                raise SessionMoveError(f"{key}: restored on the target, then not found there")
            continue
        if now != shot.value and (fresh or kind == "sessions"):
            raise SessionMoveError(f"{key}: the target holds {now!r}, the standalone {shot.value!r}")
        remember[key] = int(deadline)
        if fresh:
            counts.copied += 1
            counts.verified += 1
        else:  # the cluster's rate-limit state is newer than the standalone's: kept as it is
            counts.adopted += 1
            counts.verified += now == shot.value
    if remember:
        await target.hset(COPIED, mapping=remember)
    step("recorded", keys=len(remember))


async def remembered(target: RedisClient, run: Run) -> AsyncIterator[list[tuple[str, str, int]]]:
    """(kind, key, remembered expiry) batches of the record."""
    batch: list[tuple[str, str, int]] = []
    async for raw_key, raw_mark in target.hscan_iter(COPIED, count=run.batch):
        key = raw_key.decode()
        kind = kind_of(key)
        if kind is not None:
            batch.append((kind, key, int(raw_mark)))
        if len(batch) >= run.batch:
            yield batch
            batch = []
    if batch:
        yield batch


async def reconcile(source: RedisClient, target: RedisClient, run: Run) -> None:
    """Remembered keys untouched on the target since their copy follow the standalone: refreshed when
    changed there, sessions deleted when gone there. A key touched on the target (or gone) is left alone."""
    async for batch in remembered(target, run):
        live = [(kind, key, mark) for kind, key, mark in batch if mark != GONE]
        pipe = target.pipeline()
        for _, key, _ in live:
            pipe.pexpiretime(key)
        current = await pipe.execute()
        untouched = [(k, key, mark) for (k, key, mark), now in zip(live, current, strict=True) if now == mark]
        pipe = source.pipeline(transaction=False)
        for _, key, _ in untouched:
            pipe.pexpiretime(key)
        there = await pipe.execute() if untouched else []
        changed = [
            (kind, key, mark)
            for (kind, key, mark), deadline in zip(untouched, there, strict=True)
            if deadline > mark or (deadline == -2 and kind == "sessions")
        ]
        if not changed:
            continue
        shots = await snapshot(source, [(kind, key) for kind, key, _ in changed])
        pipe = target.pipeline()
        actions = []
        for (kind, key, mark), shot in zip(changed, shots, strict=True):
            if shot.gone:
                if kind == "sessions":  # logged out on the standalone after the copy (an expiry would be ours too)
                    pipe.eval(REVOKE, 1, key, mark)
                    actions.append((kind, key, "revoke"))
            elif shot.deadline > mark:  # changed there: a sliding TTL renewed, a rate-limit hash counted again
                pipe.eval(REFRESH, 1, key, mark, shot.pttl, shot.payload)
                actions.append((kind, key, "refresh"))
        results = await pipe.execute() if actions else []
        remember: dict[Any, int] = {}
        for (kind, key, action), result in zip(actions, results, strict=True):
            if action == "revoke" and result == 1:
                run.counts[kind].revoked += 1
                remember[key] = GONE
            elif action == "refresh" and int(result) >= 0:
                run.counts[kind].refreshed += 1
                remember[key] = int(result)
        if remember:
            await target.hset(COPIED, mapping=remember)


async def verify(source: RedisClient, target: RedisClient, run: Run) -> None:
    """--final: rescans until no session or rate-limit key on the standalone is unremembered (the phase-3 web
    is gone, so a few rounds at most). Then every remembered key: a session on both has equal values."""
    if run.final:
        for _ in range(FINAL_ROUNDS):
            again = Run(True, run.batch)
            if await copy_round(source, target, again) == 0:
                break
            for kind, counts in again.counts.items():
                run.counts[kind].add(counts)
        else:
            raise SessionMoveError(
                f"keys still appear on the standalone after {FINAL_ROUNDS} rounds: is a phase-3 web still serving"
                " from it? Run --final again once it is gone"
            )
    async for batch in remembered(target, run):
        pipe = target.pipeline()
        for kind, key, _ in batch:
            read_value(pipe, kind, key)
        on_target = await pipe.execute()
        sessions = [(key, now) for (kind, key, _), now in zip(batch, on_target, strict=True) if kind == "sessions"]
        on_source = await source.mget([key for key, _ in sessions]) if sessions else []
        for (key, now), there in zip(sessions, on_source, strict=True):
            if now is not None and there is not None and now != there:
                raise SessionMoveError(f"{key}: the target holds {now!r}, the standalone {there!r}")
        for (kind, _, _), now in zip(batch, on_target, strict=True):
            counts = run.counts[kind]
            counts.remembered += 1
            if now:
                counts.on_target += 1
            else:
                counts.gone_on_target += 1


# --- the action --------------------------------------------------------------------------------------------------


def add_move_sessions(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = actions.add_parser(
        "move-sessions",
        help="3 -> 4: copy sessions and rate-limit state from CLIMB_SOURCE_REDIS_URL into REDIS_URL, verify, record"
        " (not the cache)",
    )
    parser.add_argument(
        "--final",
        action="store_true",
        help="after the web tier rolled to REDIS_URL: copy what the standalone got meanwhile, verify every key",
    )
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, metavar="N", help="keys per round trip")


def run_move_sessions(args: argparse.Namespace, settings: Settings, shards: object = None) -> tuple[int, str]:
    """0 and the JSON report; 1 and why the move did not verify; 2 and the configuration problems."""
    try:
        source = source_redis_url(os.environ, settings)
    except ConfigError as exc:
        return 2, f"sample climb move-sessions: {exc}"
    if args.batch < 1:
        return 2, f"sample climb move-sessions: --batch: got {args.batch}, allowed: an integer from 1"
    from redis.exceptions import RedisError

    work = move_sessions(source, settings.redis_url, settings.redis_mode, final=args.final, batch=args.batch)
    try:
        return 0, json.dumps(asyncio.run(work))
    except SessionMoveError as exc:
        return 1, f"sample climb move-sessions: {exc}"
    except (RedisError, OSError) as exc:  # a server unreachable or failing over: every step is safe to run again
        return 1, f"sample climb move-sessions: {type(exc).__name__}: {exc} (run it again: it resumes)"
