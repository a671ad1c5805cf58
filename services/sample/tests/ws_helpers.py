"""Helpers for the WebSocket tests: the session cookie of a logged-in client, /ws URLs, reading event
frames with websockets' sync client, and `RawWebSocket`, a client whose reads the test controls."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from sample_helpers import Client, Postgres, Service
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame
from websockets.http11 import Response
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from testsupport.process import LOOPBACK
from testsupport.redis import RedisServer


@contextlib.contextmanager
def running(env: dict[str, str], count: int) -> Iterator[list[Service]]:
    """`count` `sample serve` processes with `env`, each stopped at the end (also when a later one fails to start)."""
    with contextlib.ExitStack() as stack:
        services = []
        for _ in range(count):
            service = Service(env)
            stack.callback(service.stop)
            services.append(service)
        yield services


def realtime_env(postgres: Postgres, redis: RedisServer, **extra: str) -> dict[str, str]:
    """A service's environment with what /ws and /events need (events and sessions on Redis), plus `extra`."""
    return {
        "DATABASE_URL": postgres.dsn,
        "REDIS_URL": redis.url,
        "EVENTS_ENABLED": "true",
        "SESSIONS_ENABLED": "true",
        **extra,
    }


def cookie_of(client: Client) -> str:
    return client.cookies["sid"]


def session_header(client: Client) -> dict[str, str]:
    """The Cookie header of `client`'s session, for a WebSocket handshake."""
    return {"cookie": f"sid={cookie_of(client)}"}


def ws_url(port: int, topics: str = "products", last_id: str | None = None) -> str:
    query = {"topics": topics, **({"last_id": last_id} if last_id else {})}
    return f"ws://{LOOPBACK}:{port}/ws?{urlencode(query, safe=',:')}"


def product(n: int) -> dict[str, object]:
    return {"sku": f"ws-{n}", "name": f"Socket {n}", "price_cents": n}


def next_frame(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return frame


def next_events(ws: ClientConnection, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next `count` frames, each an event frame."""
    frames = [next_frame(ws, timeout) for _ in range(count)]
    assert all(frame["op"] == "event" for frame in frames), frames
    return frames


def refused(url: str, cookie: str | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON body, headers with lower-case names) of a handshake the server must refuse."""
    headers = {"cookie": f"sid={cookie}"} if cookie else {}
    with pytest.raises(InvalidStatus) as refusal:
        connect(url, additional_headers=headers).close()
    response = refusal.value.response
    names = {name.lower(): value for name, value in response.headers.raw_items()}
    return response.status_code, json.loads(response.body or b"{}"), names


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


class RawWebSocket:
    """A WebSocket client on a plain socket (websockets' sans-I/O protocol): it reads only when the test says,
    sees every frame the server sends (pings too) and can shrink its receive buffer before connecting."""

    def __init__(self, port: int, path: str, cookie: str, *, deflate: bool = True, receive_buffer: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(10)
        self.sock.connect((LOOPBACK, port))
        extensions = [ClientPerMessageDeflateFactory()] if deflate else None
        self.protocol = ClientProtocol(parse_uri(f"ws://{LOOPBACK}:{port}{path}"), extensions=extensions)
        request = self.protocol.connect()
        request.headers["Cookie"] = f"sid={cookie}"
        self.protocol.send_request(request)
        self._flush()
        self.response = self._handshake()
        self._frames: list[Frame] = []
        self.received = 0
        """Bytes received since the handshake, as they came over the wire."""

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _handshake(self) -> Response:
        self.received = 0
        while True:
            for event in self._receive():
                if isinstance(event, Response):
                    return event

    def _receive(self) -> list[Response | Frame]:
        data = self.sock.recv(65536)
        self.received += len(data)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        events = self.protocol.events_received()
        self._flush()  # pongs and close replies
        if not data and not events:
            raise EOFError("connection closed")
        return events  # type: ignore[return-value]

    def next_frame(self) -> Frame:
        while not self._frames:
            self._frames += [event for event in self._receive() if isinstance(event, Frame)]
        return self._frames.pop(0)

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def close(self) -> None:
        self.sock.close()
