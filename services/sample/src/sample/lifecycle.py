"""Process drain state: set when SIGTERM (or SIGINT) arrives, before uvicorn stops accepting connections.

/readyz answers 503 from then on (the endpoint leaves the Service) and callbacks registered with `on_drain`
run. uvicorn's own shutdown (stop accepting, close every WebSocket at once, let in-flight requests finish
within SHUTDOWN_TIMEOUT_SECONDS) starts only when the coroutines registered with `before_shutdown` are done:
the realtime connections are closed in batches first (sample.realtime), and HTTP is served meanwhile.
A second signal starts the shutdown without waiting.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from types import FrameType

_state = {"draining": False}
_callbacks: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []
_before_shutdown: list[tuple[asyncio.AbstractEventLoop, Callable[[], Awaitable[None]]]] = []
_running: set[asyncio.Task[None]] = set()


def draining() -> bool:
    return _state["draining"]


def on_drain(callback: Callable[[], None]) -> None:
    """Run `callback` on the current event loop when the drain begins."""
    _callbacks.append((asyncio.get_running_loop(), callback))


def before_shutdown(work: Callable[[], Awaitable[None]]) -> None:
    """Run `work()` on the current event loop when the drain begins; the server's shutdown waits for it."""
    _before_shutdown.append((asyncio.get_running_loop(), work))


def begin_drain() -> None:
    """Called from the signal handler: safe to call from outside the loop, idempotent."""
    if _state["draining"]:
        return
    _state["draining"] = True
    for loop, callback in _callbacks:
        if not loop.is_closed():
            loop.call_soon_threadsafe(callback)


def chain_signal_handlers() -> None:
    """Begin the drain on SIGTERM/SIGINT, then call the handler in place (uvicorn's, which starts the shutdown)
    once the `before_shutdown` work is done.

    Called from the app's startup, when uvicorn has installed its handlers in this (worker) process.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if callable(previous):
            signal.signal(sig, _chained(previous))


def _chained(previous: Callable[[int, FrameType | None], object]) -> Callable[[int, FrameType | None], None]:
    def handler(sig: int, frame: FrameType | None) -> None:
        if _state["draining"] or not _before_shutdown:  # a second signal does not wait again
            begin_drain()
            previous(sig, frame)
            return
        begin_drain()
        loop = _before_shutdown[0][0]
        loop.call_soon_threadsafe(_start_after_work, lambda: previous(sig, None))

    return handler


def _start_after_work(shutdown: Callable[[], object]) -> None:
    async def run() -> None:
        try:
            await asyncio.gather(*(work() for _, work in _before_shutdown))
        finally:
            shutdown()

    task = asyncio.get_running_loop().create_task(run())
    _running.add(task)
    task.add_done_callback(_running.discard)
