"""SIGTERM with open realtime connections: the process keeps serving HTTP, refuses new realtime connections,
closes the open ones in batches (1012 "reconnect elsewhere"), and only then shuts down; its clients resume
on the other process, through a Service that routes by readiness, without missing or repeating an event."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from sample.realtime_client import RealtimeClient
from sample_helpers import Client, Postgres, Service, signup_and_login
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from ws_helpers import cookie_of, product, realtime_env, refused, running, session_header, ws_url

from testsupport.process import LOOPBACK
from testsupport.redis import RedisServer
from testsupport.tcp_proxy import TcpProxy

pytestmark = pytest.mark.usefixtures("clean")
CLIENTS = 20
PERCENT = 25
INTERVAL_MS = 500
BATCH = CLIENTS * PERCENT // 100


class ReadinessRouter(threading.Thread):
    """A Service on loopback: new connections go to the members whose /readyz answers 200, checked every 0.1 s."""

    def __init__(self, proxy: TcpProxy, members: list[Service]) -> None:
        super().__init__(daemon=True)
        self.proxy = proxy
        self.members = members
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._halt.wait(0.1):
            self.proxy.retarget([member.port for member in self.members if self._ready(member)])

    @staticmethod
    def _ready(member: Service) -> bool:
        try:
            return member.client().get("/readyz").status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


@pytest.fixture
def pair(postgres: Postgres, redis_server: RedisServer) -> Iterator[tuple[Service, Service]]:
    env = realtime_env(
        postgres,
        redis_server,
        DRAIN_BATCH_PERCENT=str(PERCENT),
        DRAIN_BATCH_INTERVAL_MS=str(INTERVAL_MS),
    )
    with running(env, 2) as (draining, survivor):
        yield draining, survivor


def batches(times: list[float], gap: float) -> list[int]:
    """Sizes of the runs of `times` (sorted) whose neighbours are less than `gap` apart."""
    sizes: list[int] = []
    previous = None
    for t in sorted(times):
        if previous is None or t - previous >= gap:
            sizes.append(0)
        sizes[-1] += 1
        previous = t
    return sizes


class Subscriber:
    """A RealtimeClient consuming in a task, keeping every event id in the order received."""

    def __init__(self, url: str, cookie: str) -> None:
        self.client = RealtimeClient(url, cookie, ["products"])
        self.ids: list[str] = []
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async for event in self.client.events():
            self.ids.append(event["id"])


async def until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.05)


def test_a_draining_process_closes_its_connections_in_batches_and_clients_resume_elsewhere(
    pair: tuple[Service, Service],
) -> None:
    draining, survivor = pair
    writer, _ = signup_and_login(survivor)
    cookie = cookie_of(writer)
    writer.post("/products", product(1))
    proxy = TcpProxy(draining.port)  # the Service: every client lands on the process that will drain
    try:
        asyncio.run(_scenario(draining, survivor, writer, cookie, proxy))
    finally:
        proxy.close()


async def _scenario(draining: Service, survivor: Service, writer: Client, cookie: str, proxy: TcpProxy) -> None:
    control = Subscriber(ws_url(survivor.port, "").split("?")[0], cookie)
    subscribers = [Subscriber(f"ws://{LOOPBACK}:{proxy.port}/ws", cookie) for _ in range(CLIENTS)]
    await until(lambda: all(s.client.connections == 1 for s in [control, *subscribers]), 20, "every client connected")
    assert draining.client().get("/realtime/connections").json()["process"] == CLIENTS
    router = ReadinessRouter(proxy, [draining, survivor])
    published = 0
    stop_publishing = asyncio.Event()

    async def publish() -> None:
        nonlocal published
        while not stop_publishing.is_set():
            reply = await asyncio.to_thread(writer.patch, "/products/1", {"stock": published})
            assert reply.status == 200
            published += 1
            await asyncio.sleep(0.02)

    publisher = asyncio.create_task(publish())
    try:
        await until(lambda: published >= 10, 20, "events flowing")
        signalled = time.monotonic()
        draining.terminate()
        probe = draining.client()
        status, body, headers = await asyncio.to_thread(refused, ws_url(draining.port), cookie)
        assert (status, body["error"]["code"], headers["retry-after"]) == (503, "draining", "1")
        assert (await asyncio.to_thread(probe.get, "/readyz")).status == 503
        assert (await asyncio.to_thread(probe.get, "/healthz")).status == 200  # plain HTTP is still served
        await asyncio.to_thread(draining.proc.wait, 60)
        drained_in = time.monotonic() - signalled
        await until(lambda: all(s.client.connections == 2 for s in subscribers), 20, "every client reconnected")
        await asyncio.sleep(1.0)  # a few more live events on the new connections
    finally:
        stop_publishing.set()
        await publisher
        router.stop()
    await until(lambda: len(control.ids) == published, 20, "the control saw every event")
    await until(lambda: all(s.ids[-1:] == control.ids[-1:] for s in subscribers), 20, "every client caught up")
    for task in [control.task, *[s.task for s in subscribers]]:
        task.cancel()
    await asyncio.gather(control.task, *[s.task for s in subscribers], return_exceptions=True)

    assert "Application shutdown complete" in draining.output()  # a graceful exit (uvicorn re-raises SIGTERM)
    batch_span = (CLIENTS // BATCH - 1) * INTERVAL_MS / 1000
    assert drained_in >= batch_span  # the shutdown waited for the last batch
    assert [s.client.closes[0][1] for s in subscribers] == [1012] * CLIENTS
    sizes = batches([s.client.closes[0][0] for s in subscribers], gap=INTERVAL_MS / 2000)
    assert max(sizes) <= BATCH and sum(sizes) == CLIENTS, sizes
    for subscriber in subscribers:  # each event once, in order, across the reconnect
        assert subscriber.ids == control.ids


def test_with_several_workers_each_drains_its_own_connections(postgres: Postgres, redis_server: RedisServer) -> None:
    env = realtime_env(
        postgres,
        redis_server,
        WEB_CONCURRENCY="2",
        DRAIN_BATCH_PERCENT="50",
        DRAIN_BATCH_INTERVAL_MS="300",
    )
    with running(env, 1) as (service,), contextlib.ExitStack() as stack:
        writer, _ = signup_and_login(service)
        header = session_header(writer)
        sockets = [stack.enter_context(connect(ws_url(service.port), additional_headers=header)) for _ in range(8)]
        service.terminate()
        for ws in sockets:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=20)
            close = closed.value.rcvd
            assert close is not None
            assert (close.code, close.reason) == (1012, "reconnect elsewhere")  # the drain's, not uvicorn's (no reason)
        service.proc.wait(timeout=30)  # the supervisor exits once both workers have
