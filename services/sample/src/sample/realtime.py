"""This process's open realtime connections (WebSockets on /ws, SSE streams on /events): the cap and the drain.

Each connection is admitted (`admit`, 503 at REALTIME_MAX_CONNECTIONS or while draining) and released
when its handler returns. On SIGTERM `drain` ends them in batches, DRAIN_BATCH_PERCENT of those open at
the start every DRAIN_BATCH_INTERVAL_MS, so a rolling update never cuts more than that share at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from sample import lifecycle
from sample.errors import ApiError
from sample.events import Event, EventBus
from sample.metrics import REALTIME_CONNECTIONS, REALTIME_DISCONNECTS, REALTIME_REJECTED

RETRY_AFTER = {"retry-after": "1"}


@dataclass(eq=False)
class Connection:
    transport: str
    """websocket or sse"""
    end: Callable[[], None]
    """Asks the connection's handler to close it and return."""
    drained: bool = False
    """True when the drain ended it (close "reconnect elsewhere"), not the handler itself."""


class Connections:
    """The open connections, oldest first; the drain closes the oldest first."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[Connection, None] = {}
        self._none_open = asyncio.Event()
        self._none_open.set()

    def __len__(self) -> int:
        return len(self._open)

    @property
    def at_capacity(self) -> bool:
        return len(self._open) >= self.cap

    def admit(self, transport: str, end: Callable[[], None]) -> Connection:
        """A new connection, counted; ApiError 503 with Retry-After: 1 at the cap or while draining."""
        if lifecycle.draining():
            reason, message = "draining", "connections: this process is shutting down, connect to another one"
        elif self.at_capacity:
            reason = "at_capacity"
            message = f"connections: {len(self)} open, the cap (REALTIME_MAX_CONNECTIONS) is {self.cap}"
        else:
            connection = Connection(transport, end)
            self._open[connection] = None
            self._none_open.clear()
            REALTIME_CONNECTIONS.labels(transport).inc()
            return connection
        REALTIME_REJECTED.labels(reason).inc()
        raise ApiError(503, reason, message, RETRY_AFTER)

    def subscribe(self, bus: EventBus, transport: str) -> tuple[asyncio.Queue[Event], Connection]:
        """A queue on `bus` and its admitted connection (ApiError 503 as `admit`, and no queue left behind).
        The queue is subscribed first, so nothing published before a replay from the history is lost."""
        queue = bus.subscribe()
        try:
            return queue, self.admit(transport, lambda: bus.end(queue))
        except ApiError:
            bus.unsubscribe(queue)
            raise

    def release(self, connection: Connection) -> None:
        if connection in self._open:
            del self._open[connection]
            REALTIME_CONNECTIONS.labels(connection.transport).dec()
        if not self._open:
            self._none_open.set()

    async def drain(self, percent: int, interval: float) -> None:
        """Ends the connections open now in batches of ceil(open * percent / 100), the first at once and one
        more every `interval` seconds, then waits at most one more interval for the last batch to close:
        at most ceil(100 / percent) * interval in all. New connections are refused meanwhile (`admit`)."""
        pending = list(self._open)
        batch = math.ceil(len(pending) * percent / 100)
        while True:
            pending = [connection for connection in pending if connection in self._open]
            for connection in pending[:batch]:
                connection.drained = True
                REALTIME_DISCONNECTS.labels("drain").inc()
                connection.end()
            pending = pending[batch:]
            if not pending:
                break
            await asyncio.sleep(interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_open.wait(), interval)
