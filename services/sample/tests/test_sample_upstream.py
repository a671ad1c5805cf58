"""Upstream calls against real loopback sockets: how each kind of failure reaches the client."""

from __future__ import annotations

import asyncio

import pytest
from sample.errors import ApiError
from sample.upstream import Upstream

from testsupport.process import LOOPBACK, free_port

OVERLOADED = b"HTTP/1.1 503 Service Unavailable\r\nx-envoy-overloaded: true\r\ncontent-length: 8\r\n\r\noverflow"
FAILED = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


async def call_server(answer: bytes | None) -> bytes:
    """Serve one request on loopback with `answer` (None: read it and never answer); return the reply body."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer is None:
            await asyncio.sleep(5)
        else:
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reply = await Upstream("catalog", f"http://{LOOPBACK}:{port}", 0.2).call("GET", "/products")
        return reply.body
    finally:
        server.close()


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (None, 504, "catalog: no answer within 200 ms, try again"),
        (OVERLOADED, 503, "catalog: unavailable, circuit breaker open: too many requests in flight or waiting"),
        (FAILED, 502, "catalog: answered 500"),
    ],
)
def test_failures_become_clean_api_errors(answer: bytes | None, status: int, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        asyncio.run(call_server(answer))
    assert (caught.value.status, caught.value.message) == (status, message)


def test_nothing_listening_is_a_503_naming_the_url() -> None:
    port = free_port()
    with pytest.raises(ApiError) as caught:
        asyncio.run(Upstream("orders", f"http://{LOOPBACK}:{port}", 1).call("GET", "/orders"))
    assert caught.value.status == 503
    assert caught.value.message.startswith(f"orders: not reachable at http://{LOOPBACK}:{port} (")


def test_chunked_answers_are_read_whole() -> None:
    assert asyncio.run(call_server(CHUNKED)) == b"hello world"
