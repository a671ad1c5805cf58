"""Open realtime connections summed over every process, for autoscaling (KEDA's metrics-api trigger).

Each process writes its count every REPORT_SECONDS into a Redis hash and its last report time (Redis
server time, so pod clocks do not matter) into a sorted set; both keys carry the hash tag `{realtime}`,
so they share a slot on a Redis Cluster and one script handles them. Reading drops the entries not
reported for STALE_MS first: a process that died without cleaning up ages out within that. No KEYS/SCAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket

from sample.realtime import Connections
from sample.redisconn import RedisClient

log = logging.getLogger(__name__)

COUNTS = "{realtime}:connections"
REPORTED = "{realtime}:reported"
REPORT_SECONDS = 3.0
STALE_MS = 12000
NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
REPORT = NOW_MS + "redis.call('ZADD', KEYS[2], now, ARGV[1]) redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])"
READ = NOW_MS + (
    "local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[1])) "
    "for _, name in ipairs(dead) do redis.call('ZREM', KEYS[2], name) redis.call('HDEL', KEYS[1], name) end "
    "return redis.call('HVALS', KEYS[1])"
)


class ConnectionTotals:
    """Reports this process's count and reads the total; `start` and `stop` run and end the reporting."""

    def __init__(self, client: RedisClient, connections: Connections) -> None:
        self.client = client
        self.connections = connections
        self.name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._report = client.register_script(REPORT)
        self._read = client.register_script(READ)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def read(self) -> tuple[int, int]:
        """(connections, processes) over every process that reported within STALE_MS."""
        counts = await self._read(keys=[COUNTS, REPORTED], args=[STALE_MS])
        return sum(int(count) for count in counts), len(counts)

    async def report(self) -> None:
        await self._report(keys=[COUNTS, REPORTED], args=[self.name, len(self.connections)])

    def start(self) -> None:
        self._task = asyncio.create_task(self._report_forever())

    async def stop(self) -> None:
        """Stop reporting and remove this process's entry (a killed process ages out instead)."""
        self._stopping.set()  # ends the loop even if redis-py loses the cancellation (EventBus.stop)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.client.zrem(REPORTED, self.name)
            await self.client.hdel(COUNTS, self.name)

    async def _report_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.report()
            except Exception as exc:
                log.warning("could not report the realtime connection count", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), REPORT_SECONDS)
