"""What the edge's retries do to a long-lived stream, under a real Envoy.

Envoy Gateway turns the route's BackendTrafficPolicy into an Envoy route retry policy with a
per-try timeout (`routing.backend_timeout_seconds`), and the HTTPRoute's stream rules into a route
with no timeout (`request: 0s`). This runs that route shape in front of a server-sent events
upstream: a per-try timeout that fires while response headers are awaited gives a 504, but once
the response has started Envoy ignores it, and never retries, so the stream runs to its end.
"""

from __future__ import annotations

import http.client
import shutil
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
import yaml

from components.circuit_breaker import RUN_AS, http_manager, listener, socket_address, static_cluster
from tests.integration.test_envoy_breaker import config_dir, envoy_binary
from testsupport.process import LOOPBACK, ServerProcess, free_port, port_open

pytestmark = pytest.mark.integration

PER_TRY_SECONDS = 0.5
EVENTS = 8
EVENT_GAP_SECONDS = 0.25  # the stream lasts 2 s: four per-try timeouts


class Events(BaseHTTPRequestHandler):
    """`/events`: EVENTS events, EVENT_GAP_SECONDS apart (chunked); `/late`: headers after 1 s."""

    protocol_version = "HTTP/1.1"
    served = 0

    def do_GET(self) -> None:
        type(self).served += 1
        if self.path == "/late":
            time.sleep(2 * PER_TRY_SECONDS)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for number in range(EVENTS if self.path == "/events" else 1):
                data = f"data: {number}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                time.sleep(EVENT_GAP_SECONDS)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # Envoy timed this try out and closed the connection: what the /late test expects

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    port = free_port()
    server = ThreadingHTTPServer((LOOPBACK, port), Events)
    Thread(target=server.serve_forever, daemon=True).start()
    Events.served = 0
    yield port
    server.shutdown()
    server.server_close()


def gateway_config(port: int, admin: int, upstream: int) -> dict[str, object]:
    """An edge route as Envoy Gateway programs a stream rule under the kit's BackendTrafficPolicy."""
    route = {
        "match": {"prefix": "/"},
        "route": {
            "cluster": "app",
            "timeout": "0s",
            "retry_policy": {
                "retry_on": "connect-failure,reset,retriable-status-codes",
                "retriable_status_codes": [502, 503, 504],
                "num_retries": 2,
                "per_try_timeout": f"{PER_TRY_SECONDS}s",
            },
        },
    }
    return {
        "admin": {"address": socket_address(LOOPBACK, admin)},
        "static_resources": {
            "listeners": [listener("edge", LOOPBACK, port, [http_manager("edge", [route])])],
            "clusters": [static_cluster("app", LOOPBACK, upstream)],
        },
    }


@pytest.fixture
def edge(upstream: int, tmp_path: Path) -> Iterator[int]:
    folder = config_dir()
    port, admin = free_port(), free_port()
    (folder / "envoy.yaml").write_text(yaml.safe_dump(gateway_config(port, admin, upstream), sort_keys=False))
    envoy = ServerProcess(
        [envoy_binary(), "--config-path", str(folder / "envoy.yaml"), "--disable-hot-restart", "--concurrency", "1"],
        ready=lambda: port_open(port),
        log=tmp_path / "envoy.log",
        uid=RUN_AS,
    )
    yield port
    envoy.stop()
    shutil.rmtree(folder)


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_headers_that_come_late_are_timed_out_per_try(edge: int) -> None:
    status, _ = get(edge, "/late")
    assert status == 504
    assert Events.served == 3  # the first try and both retries


def test_a_started_stream_outlives_the_per_try_timeout_and_is_never_retried(edge: int) -> None:
    status, body = get(edge, "/events")
    assert status == 200
    assert body == b"".join(f"data: {number}\n\n".encode() for number in range(EVENTS))
    assert Events.served == 1
