"""The reference client (sample.realtime_client): its backoff schedule, reconnecting and resuming when its
server dies, and `sample listen`."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from sample.realtime_client import Backoff, RealtimeClient
from sample.topics import ALLOWED
from sample_helpers import Postgres, Service, signup_and_login
from ws_helpers import cookie_of, product, realtime_env, running, ws_url

from testsupport.process import LOOPBACK
from testsupport.redis import RedisServer
from testsupport.tcp_proxy import TcpProxy


def test_the_backoff_is_full_jitter_under_a_doubling_ceiling_capped_and_reset() -> None:
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    same_rng = random.Random(7)
    assert delays == [same_rng.uniform(0, ceiling) for ceiling in ceilings]
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert 0 <= backoff.next_delay() <= 0.5  # prompt again, still jittered
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered: no two clients wait alike


def test_the_backoff_ceiling_never_overflows() -> None:
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(1))
    backoff.attempt = 10_000
    assert 0 <= backoff.next_delay() <= 30.0


@pytest.fixture
def pair(postgres: Postgres, redis_server: RedisServer, clean: None) -> Iterator[tuple[Service, Service]]:
    env = realtime_env(postgres, redis_server)
    with running(env, 2) as (first, second):
        yield first, second


def test_the_client_retries_with_backoff_and_resumes_when_its_server_dies(pair: tuple[Service, Service]) -> None:
    doomed, other = pair
    writer, _ = signup_and_login(other)
    proxy = TcpProxy(doomed.port)
    try:
        client = RealtimeClient(
            f"ws://{LOOPBACK}:{proxy.port}/ws", cookie_of(writer), ["products"], backoff=Backoff(base=0.1, cap=1.0)
        )
        received = asyncio.run(_across_a_crash(client, doomed, writer, proxy, other.port))
    finally:
        proxy.close()
    assert [e["data"]["id"] for e in received] == [1, 2, 3, 4, 5, 5]
    assert [e["type"] for e in received][-1] == "product.updated"
    assert client.connections == 2
    assert client.closes[0][1] is None  # no close frame: the server died


async def _across_a_crash(client: RealtimeClient, doomed: Service, writer: object, proxy: TcpProxy, port: int) -> list:
    received: list[dict[str, object]] = []

    async def consume() -> None:
        async for event in client.events():
            received.append(event)

    async def post(path: str, body: dict[str, object], method: str = "post") -> None:
        await asyncio.to_thread(getattr(writer, method), path, body)

    async def until(check: object, what: str) -> None:
        deadline = time.monotonic() + 20
        while not check():  # type: ignore[operator]
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    task = asyncio.create_task(consume())
    try:
        await until(lambda: client.connections == 1, "connected")
        for n in (1, 2):
            await post("/products", product(n))
        await until(lambda: len(received) == 2, "the first events")
        proxy.retarget(None)  # the Service has no endpoint: new connections are refused
        doomed.proc.kill()
        for n in (3, 4, 5):
            await post("/products", product(n))  # through the other process, while the client is away
        await until(lambda: client.backoff.attempt >= 3, "attempts failing, backing off")
        proxy.retarget(port)
        await until(lambda: len(received) == 5, "the missed events replayed")
        await post("/products/5", {"stock": 1}, "patch")
        await until(lambda: len(received) == 6, "live again")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return received


def test_sample_listen_prints_events_as_json_lines(pair: tuple[Service, Service]) -> None:
    first, second = pair
    writer, _ = signup_and_login(first)
    url = ws_url(second.port).split("?")[0]
    argv = [sys.executable, "-m", "sample", "listen", "--url", url, "--cookie", cookie_of(writer), "--topics"]
    listener = subprocess.Popen([*argv, "products"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while second.client().get("/realtime/connections").json()["process"] == 0:
            assert time.monotonic() < deadline, "sample listen did not connect"
            time.sleep(0.05)
        writer.post("/products", product(1))
        assert listener.stdout is not None
        line = json.loads(listener.stdout.readline())
        assert (line["op"], line["type"], line["data"]) == ("event", "product.created", {"id": 1, "version": 1})
    finally:
        listener.send_signal(signal.SIGINT)
        # its close handshake can take up to the websockets client's close_timeout (10 s)
        assert listener.wait(timeout=40) == 130
    refused = subprocess.run([*argv, "bogus"], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    message = f"topics: got 'bogus', allowed: {ALLOWED}"
    body = {"error": {"status": 400, "code": "invalid_parameter", "message": message}}
    assert refused.stderr == f"sample listen: refused: 400 {json.dumps(body, separators=(',', ':'))}\n"
