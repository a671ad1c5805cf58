"""Fire-and-forget tasks that are not lost: the event loop keeps only weak references to tasks, so
a task nobody awaits must be held somewhere until it finishes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    """Runs coroutines as tasks and holds each until it is done; its outcome is the coroutine's to handle."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
