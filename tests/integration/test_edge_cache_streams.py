"""Long-lived streams through the generated VCL under a real varnishd, in front of a real WebSocket server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from bench.edge_support import Varnish, loopback_policy, request
from components.edge_cache_vcl import CachePolicy, PathRule
from testsupport.process import require_binary
from testsupport.websocket import EchoServer, client

pytestmark = pytest.mark.integration

# everything cacheable, and an origin that must answer within 300 ms: what a stream path is spared
POLICY = CachePolicy(rules=(PathRule(prefix="/", kind="api", ttl_seconds=60),))


@pytest.fixture(scope="module")
def origin() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cache(origin: EchoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Varnish]:
    varnishd = require_binary("varnishd", "apt-get install varnish")
    policy = loopback_policy(POLICY, origin.port)
    policy = replace(policy, origin=replace(policy.origin, first_byte_timeout_ms=300))
    varnish = Varnish(varnishd, tmp_path_factory.mktemp("edge-streams"), policy)
    yield varnish
    varnish.stop()


@pytest.mark.parametrize("path", ["/ws", "/products/live"])
def test_a_websocket_is_piped_to_the_origin_on_any_path(cache: Varnish, path: str) -> None:
    before = cache.counters("MAIN.s_pipe")["MAIN.s_pipe"]
    with client(cache.http_port, path) as ws:
        assert ws.recv(timeout=10) == f"hello {path}"  # origin to client
        for message in ("one", "two"):
            ws.send(message)
            assert ws.recv(timeout=10) == message  # client to origin and back
    assert cache.counters("MAIN.s_pipe")["MAIN.s_pipe"] == before + 1


def test_a_stream_path_is_spared_the_origin_timeouts_and_never_cached(cache: Varnish) -> None:
    slow = request(cache.http_port, "/slow")
    assert slow.status == 503  # an ordinary path: the first byte came after 300 ms
    before = cache.counters("MAIN.s_pipe")["MAIN.s_pipe"]
    for _ in range(2):
        events = request(cache.http_port, "/events")
        assert (events.status, events.body) == (200, b"ok\n")
        assert "x-cache" not in events.headers  # piped: no cache lookup, no delivery marker
    assert cache.counters("MAIN.s_pipe")["MAIN.s_pipe"] == before + 2
