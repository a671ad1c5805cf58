"""Process drain state: set when SIGTERM arrives, before uvicorn stops accepting connections.

/readyz answers 503 from then on (the endpoint leaves the Service), and long-lived streams
registered with `on_drain` end so in-flight requests can finish within SHUTDOWN_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

_state = {"draining": False}
_callbacks: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []


def draining() -> bool:
    return _state["draining"]


def on_drain(callback: Callable[[], None]) -> None:
    """Run `callback` on the current event loop when the drain begins."""
    _callbacks.append((asyncio.get_running_loop(), callback))


def begin_drain() -> None:
    """Called from the signal handler: safe to call from outside the loop, idempotent."""
    if _state["draining"]:
        return
    _state["draining"] = True
    for loop, callback in _callbacks:
        if not loop.is_closed():
            loop.call_soon_threadsafe(callback)
