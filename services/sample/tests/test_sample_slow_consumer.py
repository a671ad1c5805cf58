"""A WebSocket client that stops reading is dropped with close 4000 once its bounded bus queue overflows,
without a gap before the close, while another subscriber on the same process keeps getting every event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator

import pytest
from sample.events import EventBus
from sample.redisconn import connect as connect_redis
from sample_helpers import Postgres, Service, signup_and_login
from websockets.frames import Close, Opcode
from websockets.sync.client import connect
from ws_helpers import RawWebSocket, cookie_of, id_key, next_frame, product, realtime_env, ws_url

from testsupport.redis import RedisServer

pytestmark = pytest.mark.usefixtures("clean")
MAX_EVENTS = 400000
"""Far more than the bus queue (1000) plus what the transport and socket buffers hold."""


@pytest.fixture
def service(postgres: Postgres, redis_server: RedisServer) -> Iterator[Service]:
    env = realtime_env(
        postgres,
        redis_server,
        EVENTS_HEARTBEAT_SECONDS="600",  # the stalled client does not answer pings: keep them out of this
    )
    service = Service(env)
    yield service
    service.stop()


class Reader(threading.Thread):
    """A subscriber that reads every frame as it comes, noting when each arrived."""

    def __init__(self, port: int, cookie: str) -> None:
        super().__init__(daemon=True)
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(ws_url(port), additional_headers={"cookie": f"sid={cookie}"}))
        self.events: list[tuple[float, str]] = []
        self.start()

    def run(self) -> None:
        try:
            while True:
                frame = next_frame(self.ws, timeout=None)  # type: ignore[arg-type]
                self.events.append((time.monotonic(), frame["id"]))
        except Exception:
            return

    def close(self) -> None:
        self._stack.close()
        self.join(timeout=10)


def publish(redis_url: str, count: int) -> None:
    """`count` product.updated events through the service's own EventBus, from here: an HTTP write per event
    would take minutes to fill the socket buffers that come before the bus queue (megabytes on loopback)."""

    async def run() -> None:
        client = connect_redis(redis_url, "standalone")
        bus = EventBus(client, history=10000)
        try:
            for _ in range(0, count, 100):
                await asyncio.gather(*(bus.publish("product.updated", {"id": 1, "version": n}) for n in range(100)))
        finally:
            await client.aclose()

    asyncio.run(run())


def test_a_stalled_client_is_closed_with_4000_and_others_keep_their_latency(
    service: Service, redis_server: RedisServer
) -> None:
    writer, _ = signup_and_login(service)
    cookie = cookie_of(writer)
    writer.post("/products", product(1))
    stalled = RawWebSocket(service.port, "/ws?topics=products", cookie, deflate=False, receive_buffer=4096)
    fast = Reader(service.port, cookie)
    try:
        published = 0
        while writer.metric("realtime_disconnects_total", reason="slow_consumer") == 0:
            assert published < MAX_EVENTS, "the stalled client was never dropped"
            publish(redis_server.url, 2000)
            published += 2000
        for _ in range(20):  # the other subscriber still gets each new event at once
            sent = time.monotonic()
            writer.patch("/products/1", {"stock": 8})
            published += 1
            deadline = sent + 5.0
            while len(fast.events) < published and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(fast.events) == published, f"event {published} not received within 5 s"
        ids = [event_id for _, event_id in fast.events]
        assert ids == sorted(set(ids), key=id_key)  # each once, in order
        stalled_ids: list[str] = []
        while (frame := stalled.next_frame()).opcode != Opcode.CLOSE:  # now it reads what was buffered
            if frame.opcode == Opcode.TEXT:
                stalled_ids.append(json.loads(frame.data)["id"])
        close = Close.parse(frame.data)
        assert (close.code, close.reason) == (4000, "slow consumer: resume from your last id")
        assert 0 < len(stalled_ids) < published
        assert stalled_ids == ids[: len(stalled_ids)]  # no gap before the close: resuming misses nothing
    finally:
        stalled.close()
        fast.close()
