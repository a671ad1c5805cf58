"""Change events: appended to a Redis stream (for resume) and fanned out to every replica by pub/sub.

Each process runs one listener (SUBSCRIBE, or SSUBSCRIBE on a Redis Cluster, where the channel and
stream share a hash slot) and hands each message to its local subscribers (SSE streams and WebSockets), each
through a queue of QUEUE_SIZE events: one that falls that far behind is ended (`end`). The stream keeps the
last EVENTS_HISTORY events; a client resuming from its last id replays what it missed from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import RedisCluster

from sample.metrics import EVENTS_PUBLISHED, REALTIME_DISCONNECTS
from sample.redisconn import RedisClient
from sample.responses import encode

log = logging.getLogger(__name__)

STREAM = "{events}:log"
CHANNEL = "{events}:live"
QUEUE_SIZE = 1000
PUBLISH = (  # the channel shares the stream's hash slot ({events}), as SPUBLISH in a script on a cluster needs
    "local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2]) "
    "redis.call(ARGV[3], ARGV[4], id .. ' ' .. ARGV[2]) "
    "return id"
)
Event = tuple[bytes, bytes]  # (stream id, JSON payload)
END: Event = (b"", b"")  # tells a subscriber its stream should end


def parse_id(event_id: bytes | str) -> tuple[int, int]:
    """A stream id "ms-seq" as a comparable pair; ValueError when it is not one."""
    text = event_id.decode() if isinstance(event_id, bytes) else event_id
    ms, _, seq = text.partition("-")
    if not (ms.isdigit() and seq.isdigit()):
        raise ValueError(text)
    return int(ms), int(seq)


class EventBus:
    """Publishes events and delivers them to this process's subscribers (bounded queues)."""

    def __init__(self, client: RedisClient, history: int) -> None:
        self.client = client
        self.history = history
        self.sharded = isinstance(client, RedisCluster)
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._publish = client.register_script(PUBLISH)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def publish(self, event_type: str, data: dict[str, Any]) -> bytes:
        """Appends to the history and publishes in one script: live delivery follows stream-id order even when
        several processes publish at once (separate XADD and PUBLISH calls could interleave)."""
        payload = encode({"type": event_type, "data": data})
        command = "SPUBLISH" if self.sharded else "PUBLISH"
        event_id: bytes = await self._publish(keys=[STREAM], args=[self.history, payload, command, CHANNEL])
        EVENTS_PUBLISHED.labels(event_type).inc()
        return event_id

    async def replay(self, after: str) -> list[Event]:
        """Events after stream id `after` still in the history, oldest first."""
        entries = await self.client.xrange(STREAM, min=f"({after}", max="+", count=self.history)
        return [(event_id, fields[b"e"]) for event_id, fields in entries]

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(queue)

    def end(self, queue: asyncio.Queue[Event]) -> None:
        """Stop delivering to `queue` and make END the next thing it yields: the events still queued are dropped
        too, so a client never gets an event after a gap; it resumes from the last id it saw, before them."""
        self._subscribers.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(END)

    def _deliver(self, queue: asyncio.Queue[Event], event: Event) -> None:
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:  # a stalled client: drop it, it resumes from its last id
            REALTIME_DISCONNECTS.labels("slow_consumer").inc()
            self.end(queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever())

    async def stop(self) -> None:
        """Ends the listener. The flag ends it within a second even when redis-py loses the cancellation
        (seen when the stop comes while the listener is still connecting: a failed bind at start-up)."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event listener lost Redis, reconnecting", extra={"error": str(exc)})
                await asyncio.sleep(1.0)

    async def _listen(self) -> None:
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()  # SSUBSCRIBE routes by slot: the slot map must be loaded first
        pubsub = self.client.pubsub()
        try:
            if self.sharded:
                await pubsub.ssubscribe(CHANNEL)
            else:
                await pubsub.subscribe(CHANNEL)
            while not self._stopping.is_set():
                if self.sharded:
                    message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
                else:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message["type"] not in ("message", "smessage"):
                    continue
                event_id, _, payload = message["data"].partition(b" ")
                for queue in list(self._subscribers):
                    self._deliver(queue, (event_id, payload))
        finally:
            await pubsub.aclose()
