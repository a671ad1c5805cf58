"""Refresh-ahead: an entry read after its refresh time is reloaded in the background, once, while
readers keep getting the current value; the database sees one query per batch, not one per key.

Keys that come due within one BATCH_SECONDS window are refreshed together:

1. one pipeline *claims* each key: a compare-and-set that pushes the entry's refresh time CLAIM_MS
   ahead, so every other reader and process sees it as not due (one refresher per key, cluster-wide);
2. the loads run in one event-loop turn, so the coalesced product reader makes them one query;
3. one pipeline stores each new value with a compare-and-set against the claimed value: a write that
   invalidated the entry meanwhile wins, and the refresh never puts an older row back.

A refresh that fails (database or Redis down) is logged and dropped; its claim lapses after CLAIM_MS
and a later read tries again. Until the entry expires readers are served the value they had.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sample import cacheentry
from sample.background import Background
from sample.metrics import CACHE_REFRESHES
from sample.redisconn import RedisClient

log = logging.getLogger(__name__)

BATCH_SECONDS = 0.05
CLAIM_MS = 5000
# KEYS[1] entry; ARGV[1] the value expected; ARGV[2] the new value; ARGV[3] its lifetime in ms, 0: keep the TTL
COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""

Loader = Callable[[], Awaitable[bytes | None]]
Entry = Callable[[bytes | None], tuple[bytes, int]]  # loaded row -> (value to store, lifetime in ms)


class Refresher:
    """Collects due keys for BATCH_SECONDS, then claims, loads and stores them as one batch."""

    def __init__(self, client: RedisClient, entry: Entry) -> None:
        self.client = client
        self.entry = entry
        self._due: dict[str, tuple[bytes, Loader]] = {}
        self._running = Background()

    def schedule(self, key: str, seen: bytes, load: Loader) -> None:
        """Refresh `key`, whose current value is `seen`, in the next batch (once, however often it is read)."""
        if key in self._due:
            return
        if not self._due:
            self._running.spawn(self._after_window())
        self._due[key] = (seen, load)

    async def _after_window(self) -> None:
        await asyncio.sleep(BATCH_SECONDS)
        batch, self._due = self._due, {}
        try:
            await self._refresh(batch)
        except Exception as exc:
            log.warning("cache refresh failed, entries stay until they expire", extra={"error": str(exc)})

    async def _refresh(self, batch: dict[str, tuple[bytes, Loader]]) -> None:
        claim_until = cacheentry.now_ms() + CLAIM_MS
        claims = {key: cacheentry.restamp(seen, claim_until) for key, (seen, _) in batch.items()}
        pipe = self.client.pipeline(transaction=False)
        for key, (seen, _) in batch.items():
            pipe.eval(COMPARE_AND_SET, 1, key, seen, claims[key], 0)
        won = [key for key, ok in zip(batch, await pipe.execute(), strict=True) if ok]
        if not won:
            return
        loaded = await asyncio.gather(*(batch[key][1]() for key in won), return_exceptions=True)
        pipe = self.client.pipeline(transaction=False)
        for key, row in zip(won, loaded, strict=True):
            if isinstance(row, BaseException):
                log.warning("cache refresh of one key failed", extra={"key": key, "error": str(row)})
                continue
            value, lifetime_ms = self.entry(row)
            pipe.eval(COMPARE_AND_SET, 1, key, claims[key], value, lifetime_ms)
        CACHE_REFRESHES.inc(sum(await pipe.execute()))  # a key invalidated meanwhile is not counted
