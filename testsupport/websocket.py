"""A real WebSocket upstream on loopback (the `websockets` library's server), for proxies under test.

`EchoServer` answers WebSocket upgrades on any path: it greets first (`hello <path>`, a message
from the server unasked) and then echoes every message. Plain HTTP requests get `/healthz`
(200) and `/slow` (200 after `SLOW_SECONDS`), so a test can show the proxy's ordinary timeout on
the same upstream. Pings are off on both sides: a silent stream stays silent, as an idle client's would.
"""

from __future__ import annotations

import threading
import time

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import Server, ServerConnection, serve

from testsupport.process import LOOPBACK, free_port

SLOW_SECONDS = 1.0


def _plain_http(connection: ServerConnection, request: Request) -> Response | None:
    """Requests that are not upgrades get an HTTP answer; upgrades go on to the handshake."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return None
    if request.path in ("/slow", "/events"):
        time.sleep(SLOW_SECONDS)
    return Response(200, "OK", Headers({"Content-Type": "text/plain", "Content-Length": "3"}), b"ok\n")


def _echo(connection: ServerConnection) -> None:
    assert connection.request is not None
    connection.send(f"hello {connection.request.path}")
    for message in connection:
        connection.send(message)


class EchoServer:
    """The WebSocket echo server in a thread, on a free loopback port, until `stop()`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: Server = serve(_echo, LOOPBACK, self.port, process_request=_plain_http, ping_interval=None)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()


def client(port: int, path: str) -> ClientConnection:
    """A WebSocket client through whatever listens on `port` (a proxy), without pings of its own."""
    return connect(f"ws://{LOOPBACK}:{port}{path}", ping_interval=None, open_timeout=10, close_timeout=5)
