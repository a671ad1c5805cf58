"""The fan-out ceiling: a bare asyncio server (uvloop) that takes WebSockets at any path and writes
every event published on the service's channel to each of them, one `transport.write` each.

No framework, no task or queue per connection, no topics, no pings: what one Python process and
the kernel's loopback TCP cost per delivered message before the service does any work. It reads
PORT and REDIS_URL from the environment and runs until it is terminated.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from typing import cast

import uvloop
from redis.asyncio import Redis

CHANNEL = "{events}:live"  # the service's (sample.events.CHANNEL)
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3


class Subscriber(asyncio.Protocol):
    """Answers the opening handshake, then only receives frames."""

    def __init__(self, subscribers: set[asyncio.Transport]) -> None:
        self.subscribers = subscribers
        self.transport: asyncio.Transport | None = None
        self.request = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport in self.subscribers:
            return
        self.request += data
        end = self.request.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = self.request[:end].split(b"\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in lines if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + ACCEPT_GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-accept: " + accept + b"\r\n\r\n"
        )
        self.subscribers.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.subscribers.discard(self.transport)


def text_frame(payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return bytes([0x81, size]) + payload
    if size < 1 << 16:
        return bytes([0x81, 126]) + size.to_bytes(2, "big") + payload
    return bytes([0x81, 127]) + size.to_bytes(8, "big") + payload


async def main() -> None:
    subscribers: set[asyncio.Transport] = set()
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: Subscriber(subscribers), "127.0.0.1", int(os.environ["PORT"]), backlog=4096)
    pubsub = Redis.from_url(os.environ["REDIS_URL"]).pubsub()
    await pubsub.subscribe(CHANNEL)
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        event_id, _, payload = message["data"].partition(b" ")
        frame = text_frame(b'{"op":"event","id":"' + event_id + b'",' + payload[1:])
        for transport in list(subscribers):
            transport.write(frame)


if __name__ == "__main__":
    uvloop.run(main())
