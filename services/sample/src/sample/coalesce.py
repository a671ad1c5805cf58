"""Request coalescing (the DataLoader pattern): the keys that concurrent requests ask for during one
event-loop turn are fetched with ONE call (a Redis MGET, a `WHERE id = ANY($1)` query).

Under load one round trip then serves many requests; a lone request waits one loop turn at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Generic, TypeVar

from sample.background import Background

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """Batches `get(key)` calls made in the same loop turn into one `fetch(keys)`; absent keys give None."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]]) -> None:
        self.fetch = fetch
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._running = Background()

    def get(self, key: K) -> asyncio.Future[V | None]:
        """A future for the value of `key`, one per caller, so a cancelled caller cancels only its own."""
        if not self._pending:
            self._running.spawn(self._resolve())  # its first step runs after this turn: the batch is complete
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(future)
        return future

    async def _resolve(self) -> None:
        batch, self._pending = self._pending, {}
        try:
            values = await self.fetch(list(batch))
        except BaseException as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, futures in batch.items():
            for future in futures:
                if not future.done():
                    future.set_result(values.get(key))
