"""Calls to another role of the service through the pod's Envoy sidecar (CATALOG_URL, ORDERS_URL).

Each call is one HTTP/1.1 request on a fresh loopback connection to the sidecar, bounded by
UPSTREAM_TIMEOUT_MS. What goes wrong becomes a clean API error for the client, never a 500:
the sidecar's 503 (circuit breaker open, overflow, upstream unreachable) is a 503 saying so, a
timeout is a 504, another 5xx is a 502.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from sample.errors import ApiError


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def _why_unavailable(reply: Reply) -> str:
    """The sidecar's reason for a 503, in words."""
    text = reply.body[:200].decode(errors="replace").strip()
    if reply.headers.get("x-envoy-overloaded") == "true":
        return "circuit breaker open: too many requests in flight or waiting"
    if text == "no healthy upstream":
        return "circuit breaker open: every host was ejected after repeated failures"
    if text.startswith("upstream connect error"):
        return f"cannot connect: {text}"
    return f"answered 503: {text}"


class Upstream:
    """Another role reached at `base_url` (normally the sidecar's local listener)."""

    def __init__(self, name: str, base_url: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        self.name = name
        self.base_url = base_url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.authority = parts.netloc
        self.timeout = timeout

    async def call(self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        """The upstream's reply if it is not a 5xx; otherwise an ApiError (503, 504 or 502) naming the upstream."""
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._exchange(method, target, body, headers or {})
        except TimeoutError:
            raise ApiError(
                504, "upstream_timeout", f"{self.name}: no answer within {round(self.timeout * 1000)} ms, try again"
            ) from None
        except OSError as error:
            raise ApiError(
                503, "upstream_unavailable", f"{self.name}: not reachable at {self.base_url} ({error}), try again"
            ) from None
        except h11.ProtocolError as error:
            raise ApiError(502, "upstream_error", f"{self.name}: malformed HTTP answer ({error})") from None
        if reply.status == 503:
            raise ApiError(503, "upstream_unavailable", f"{self.name}: unavailable, {_why_unavailable(reply)}")
        if reply.status == 504:
            raise ApiError(504, "upstream_timeout", f"{self.name}: timed out behind the sidecar, try again")
        if reply.status >= 500:
            raise ApiError(502, "upstream_error", f"{self.name}: answered {reply.status}")
        return reply

    async def _exchange(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> Reply:
        conn = h11.Connection(h11.CLIENT)
        sent = [("host", self.authority), ("connection", "close"), ("content-length", str(len(body)))]
        request = h11.Request(method=method, target=target, headers=[*sent, *headers.items()])
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            await writer.drain()
            status, received, chunks = 0, {}, []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    received = {k.decode().lower(): v.decode(errors="replace") for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return Reply(status, received, b"".join(chunks))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
