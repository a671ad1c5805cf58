"""A reference client of GET /ws: connect with the session cookie, take events, reconnect and resume.

    client = RealtimeClient("ws://host:8080/ws", cookie, ["products", "orders"])
    async for event in client.events():   # {"op": "event", "id", "type", "data"}, forever
        ...

It remembers the last event id and reconnects with `last_id`, so the server replays what was missed.
Between attempts it waits a full-jitter exponential backoff (`Backoff`). After a close that means
"resume elsewhere" (1012 drain, 4000 slow consumer), or a connection that stayed up STABLE_SECONDS, the
backoff starts over: the next attempt comes promptly, still jittered so clients do not arrive together.
A handshake refused with 400, 401 or 404 is not retried (`Refused`); 503 (at capacity, draining) is.
`sample listen` runs it and prints each event as a JSON line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

log = logging.getLogger(__name__)

RESUME_CODES = (1012, 4000)
STABLE_SECONDS = 10.0
RETRIED_STATUS = 503


class Refused(Exception):
    """The server refused the handshake for a reason retrying cannot fix (bad topics, no session)."""


class Backoff:
    """Full-jitter exponential backoff: attempt n (from 0) waits uniform(0, min(cap, base * 2**n)) seconds."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class RealtimeClient:
    """Events of `topics` from the /ws at `url`, across reconnects, each once and in order."""

    def __init__(
        self,
        url: str,
        cookie: str,
        topics: Sequence[str],
        *,
        last_id: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = url
        self.cookie = cookie
        self.topics = list(topics)
        self.last_id = last_id
        """The id of the last event received: the next connection resumes after it."""
        self.backoff = backoff or Backoff()
        self.connections = 0
        """Handshakes that succeeded."""
        self.closes: list[tuple[float, int | None]] = []
        """(time.monotonic(), close code or None) of every connection that ended."""

    def connect_url(self) -> str:
        query = {"topics": ",".join(self.topics)}
        if self.last_id is not None:
            query["last_id"] = self.last_id
        return f"{self.url}?{urlencode(query, safe=',:')}"

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event frame, forever; raises `Refused` when the server refuses for good."""
        while True:
            opened = None
            code = None
            try:
                async with connect(self.connect_url(), additional_headers={"cookie": f"sid={self.cookie}"}) as ws:
                    opened = time.monotonic()
                    self.connections += 1
                    async for raw in ws:
                        frame = json.loads(raw)
                        if frame.get("op") == "event":
                            self.last_id = frame["id"]
                            yield frame
                        elif frame.get("op") == "error":
                            log.warning("server rejected a message", extra={"error": frame.get("message")})
                    code = ws.close_code
            except InvalidStatus as exc:
                if exc.response.status_code != RETRIED_STATUS:
                    body = bytes(exc.response.body or b"").decode(errors="replace")
                    raise Refused(f"{exc.response.status_code} {body}") from None
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
            except (OSError, TimeoutError, InvalidHandshake) as exc:  # unreachable, or not a WebSocket answer
                log.info("realtime connection failed", extra={"error": str(exc)})
            if opened is not None:
                self.closes.append((time.monotonic(), code))
                if code in RESUME_CODES or time.monotonic() - opened >= STABLE_SECONDS:
                    self.backoff.reset()
            await asyncio.sleep(self.backoff.next_delay())


async def listen(url: str, cookie: str, topics: Sequence[str]) -> None:
    """`sample listen`: print every event as one JSON line on stdout."""
    async for event in RealtimeClient(url, cookie, topics).events():
        print(json.dumps(event, separators=(",", ":")), flush=True)
