"""Cache-aside in Redis with TTL, invalidation on write and stampede protection.

A miss is loaded once: concurrent misses for a key in this process share one load (single-flight),
and across processes the first to take a short Redis lock loads while the others poll for its result.
Values are the encoded JSON bytes; b"" marks a row that does not exist (cached for a short time).

Lookups are coalesced (coalesce.py): the GETs that concurrent requests issue in one event-loop turn
go to Redis as one MGET.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence

from sample.coalesce import Coalescer
from sample.metrics import CACHE_HIT, CACHE_MISS
from sample.redisconn import RedisClient, mget

LOCK_MS = 3000
POLL_SECONDS = 0.01
POLL_ATTEMPTS = 20
MISSING_TTL_SECONDS = 5
MISSING = b""
RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

Loader = Callable[[], Awaitable[bytes | None]]
BatchLoader = Callable[[list[int]], Awaitable[dict[int, bytes]]]


class Cache:
    """Cache-aside over a Redis client with a TTL in seconds (±10% jitter so keys do not expire together)."""

    def __init__(self, client: RedisClient, ttl_seconds: int) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self._inflight: dict[str, asyncio.Future[bytes | None]] = {}
        self._release = client.register_script(RELEASE)
        self._lookups: Coalescer[str, bytes] = Coalescer(self._mget)

    async def _mget(self, keys: list[str]) -> dict[str, bytes]:
        values = await mget(self.client, keys)
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    def _ttl(self) -> int:
        return max(1, round(self.ttl * random.uniform(0.9, 1.1)))

    async def get_or_load(self, key: str, load: Loader) -> bytes | None:
        """The cached bytes for key, else `load()` once and cache its result; None when the row is missing."""
        value = await self._lookups.get(key)
        if value is not None:
            CACHE_HIT.inc()
            return None if value == MISSING else value
        CACHE_MISS.inc()
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._load_once(key, load)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters, if any, re-raise it themselves
            raise
        finally:
            del self._inflight[key]

    async def _load_once(self, key: str, load: Loader) -> bytes | None:
        lock_key, token = f"lock:{key}", secrets.token_hex(8)
        if not await self.client.set(lock_key, token, nx=True, px=LOCK_MS):
            for _ in range(POLL_ATTEMPTS):
                await asyncio.sleep(POLL_SECONDS)
                value = await self.client.get(key)
                if value is not None:
                    return None if value == MISSING else value
            return await load()  # the lock holder is slow or gone: serve from the database, uncached
        try:
            value = await load()
            await self._store(key, value)
            return value
        finally:
            await self._release(keys=[lock_key], args=[token])

    async def _store(self, key: str, value: bytes | None) -> None:
        if value is None:
            await self.client.set(key, MISSING, ex=MISSING_TTL_SECONDS)
        else:
            await self.client.set(key, value, ex=self._ttl())

    async def get_many(self, keys: dict[int, str], load: BatchLoader) -> dict[int, bytes]:
        """Cached bytes by id for the ids in `keys`, loading all misses with one `load(ids)` call."""
        values = await mget(self.client, list(keys.values()))
        found: dict[int, bytes] = {}
        missing: list[int] = []
        for ident, value in zip(keys, values, strict=True):
            if value is None:
                missing.append(ident)
            elif value != MISSING:
                found[ident] = value
        CACHE_HIT.inc(len(keys) - len(missing))
        if missing:
            CACHE_MISS.inc(len(missing))
            loaded = await load(missing)
            pipe = self.client.pipeline(transaction=False)
            for ident in missing:
                value = loaded.get(ident)
                pipe.set(
                    keys[ident],
                    MISSING if value is None else value,
                    ex=MISSING_TTL_SECONDS if value is None else self._ttl(),
                )
            await pipe.execute()
            found.update(loaded)
        return found

    async def invalidate(self, keys: Sequence[str]) -> None:
        """Delete keys after a committed write, so the next read loads the new row."""
        for key in keys:
            await self.client.delete(key)
