"""Process drain state: set when SIGTERM (or SIGINT) arrives, before uvicorn stops accepting connections.

/readyz answers 503 from then on (the endpoint leaves the Service), and long-lived streams
registered with `on_drain` end so in-flight requests can finish within SHUTDOWN_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType

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


def chain_signal_handlers() -> None:
    """Begin the drain on SIGTERM/SIGINT, then call the handler in place (uvicorn's, which stops the server).

    Called from the app's startup, when uvicorn has installed its handlers in this (worker) process.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if callable(previous):
            signal.signal(sig, _chained(previous))


def _chained(previous: Callable[[int, FrameType | None], object]) -> Callable[[int, FrameType | None], None]:
    def handler(sig: int, frame: FrameType | None) -> None:
        begin_drain()
        previous(sig, frame)

    return handler
