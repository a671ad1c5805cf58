"""Cache-aside in Redis with TTL, invalidation on write, stampede protection and refresh-ahead.

A miss is loaded once: concurrent misses for a key in this process share one load (single-flight),
and across processes the first to take a short Redis lock loads while the others poll for its result.
A hit whose entry is due (CACHE_REFRESH_AHEAD_PERCENT of its TTL left, or past it within
CACHE_STALE_SECONDS) is served as is and reloaded in the background (refresh.py), so expiry of a key
that is being read does not reach the database on a reader's path. Entries are `cacheentry` values.

Lookups are coalesced (coalesce.py): the GETs that concurrent requests issue in one event-loop turn
go to Redis as one MGET.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from sample import cacheentry
from sample.background import Background
from sample.cacheentry import MISSING
from sample.coalesce import Coalescer
from sample.config import Settings
from sample.metrics import CACHE_HIT, CACHE_MISS
from sample.redisconn import RedisClient, mget
from sample.refresh import Refresher

log = logging.getLogger(__name__)

LOCK_MS = 3000
POLL_SECONDS = 0.01
POLL_ATTEMPTS = 20
MISSING_TTL_SECONDS = 5
RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

Loader = Callable[[], Awaitable[bytes | None]]
BatchLoader = Callable[[list[int]], Awaitable[dict[int, bytes]]]


class Cache:
    """Cache-aside over a Redis client, with the CACHE_* settings: a TTL with ±10% jitter (so that keys
    do not expire together), refresh-ahead and a stale grace."""

    def __init__(self, client: RedisClient, settings: Settings) -> None:
        self.client = client
        self.ttl = settings.cache_ttl_seconds
        self.ahead = settings.cache_refresh_ahead_percent / 100
        self.stale_ms = settings.cache_stale_seconds * 1000
        self._inflight: dict[str, asyncio.Future[bytes]] = {}
        self._release = client.register_script(RELEASE)
        self._lookups: Coalescer[str, bytes] = Coalescer(self._mget)
        self._refresher = Refresher(client, self._entry)
        self._background = Background()

    async def _mget(self, keys: list[str]) -> dict[str, bytes]:
        values = await mget(self.client, keys)
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    def _entry(self, row: bytes | None) -> tuple[bytes, int]:
        """What to store for a loaded row and for how many ms: fresh for the jittered TTL, due for refresh
        `ahead` of its end, then kept CACHE_STALE_SECONDS longer while a refresh is under way."""
        if row is None:
            return MISSING, MISSING_TTL_SECONDS * 1000
        fresh_ms = round(self.ttl * 1000 * random.uniform(0.9, 1.1))
        refresh_at = cacheentry.now_ms() + fresh_ms - round(fresh_ms * self.ahead)
        return cacheentry.pack(row, refresh_at), fresh_ms + self.stale_ms

    async def get_or_load(self, key: str, load: Loader) -> bytes | None:
        """The cached row for key, else `load()` once and cache its result; None when the row is missing."""
        value = await self._lookups.get(key)
        if value is None:
            CACHE_MISS.inc()
            value = await self._load_shared(key, load)
        else:
            CACHE_HIT.inc()
            if value != MISSING and cacheentry.refresh_at_ms(value) <= cacheentry.now_ms():
                self._refresher.schedule(key, value, load)
        return cacheentry.body(value)

    async def _load_shared(self, key: str, load: Loader) -> bytes:
        """Load `key` once in this process: a caller that misses while the load, or the store after it, is
        under way shares its result (the store is not awaited, but the key stays in flight until it lands)."""
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value, store = await self._load_once(key, load)
        except BaseException as exc:
            del self._inflight[key]
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters, if any, re-raise it themselves
            raise
        future.set_result(value)
        if store is None:
            del self._inflight[key]
        else:
            self._background.spawn(self._landed(key, store))
        return value  # the reader does not wait for the store

    async def _landed(self, key: str, store: Coroutine[Any, Any, None]) -> None:
        try:
            await store
        finally:
            del self._inflight[key]

    async def _load_once(self, key: str, load: Loader) -> tuple[bytes, Coroutine[Any, Any, None] | None]:
        """The loaded entry and, when this process holds the lock, the store that must follow."""
        lock_key, token = f"lock:{key}", secrets.token_hex(8)
        if not await self.client.set(lock_key, token, nx=True, px=LOCK_MS):
            for _ in range(POLL_ATTEMPTS):
                await asyncio.sleep(POLL_SECONDS)
                value = await self.client.get(key)
                if value is not None:
                    return value, None
            return self._entry(await load())[0], None  # the lock holder is slow or gone: from the database, uncached
        try:
            value, lifetime_ms = self._entry(await load())
        except BaseException:
            self._background.spawn(self._store_and_release(lock_key, token, None))
            raise
        return value, self._store_and_release(lock_key, token, (key, value, lifetime_ms))

    async def _store_and_release(self, lock_key: str, token: str, entry: tuple[str, bytes, int] | None) -> None:
        """Store the loaded (key, value, lifetime in ms), if any, then release the lock: pollers stop."""
        try:
            if entry is not None:
                key, value, lifetime_ms = entry
                await self.client.set(key, value, px=lifetime_ms)
            await self._release(keys=[lock_key], args=[token])
        except Exception as exc:  # the lock expires by itself; the next read loads again
            log.warning("cache store failed", extra={"lock": lock_key, "error": str(exc)})

    async def get_many(self, keys: dict[int, str], load: BatchLoader) -> dict[int, bytes]:
        """Cached rows by id for the ids in `keys`, loading all misses with one `load(ids)` call."""
        values = await mget(self.client, list(keys.values()))
        found: dict[int, bytes] = {}
        missing: list[int] = []
        for ident, value in zip(keys, values, strict=True):
            if value is None:
                missing.append(ident)
            elif (row := cacheentry.body(value)) is not None:
                found[ident] = row
        CACHE_HIT.inc(len(keys) - len(missing))
        if missing:
            CACHE_MISS.inc(len(missing))
            loaded = await load(missing)
            pipe = self.client.pipeline(transaction=False)
            for ident in missing:
                value, lifetime_ms = self._entry(loaded.get(ident))
                pipe.set(keys[ident], value, px=lifetime_ms)
            await pipe.execute()
            found.update(loaded)
        return found

    async def invalidate(self, keys: Sequence[str]) -> None:
        """Delete keys after a committed write, so the next read loads the new row."""
        for key in keys:
            await self.client.delete(key)
