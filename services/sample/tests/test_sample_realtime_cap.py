"""REALTIME_MAX_CONNECTIONS: at the cap a new /ws or /events gets 503 at_capacity with Retry-After and
/readyz answers 503, so the pod stops taking new ones; when one closes, a new one is accepted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sample_helpers import Client, EventStream, Postgres, Service, signup_and_login
from websockets.sync.client import connect
from ws_helpers import cookie_of, realtime_env, refused, ws_url

from testsupport.process import wait_for
from testsupport.redis import RedisServer

pytestmark = pytest.mark.usefixtures("clean")
AT_CAPACITY = "connections: 2 open, the cap (REALTIME_MAX_CONNECTIONS) is 2"


@pytest.fixture
def service(postgres: Postgres, redis_server: RedisServer) -> Iterator[Service]:
    env = realtime_env(
        postgres,
        redis_server,
        EVENTS_HEARTBEAT_SECONDS="1",
        REALTIME_MAX_CONNECTIONS="2",
    )
    service = Service(env)
    yield service
    service.stop()


def connections_check(client: Client) -> tuple[int, str]:
    reply = client.get("/readyz")
    return reply.status, reply.json()["checks"]["connections"]


def test_at_the_cap_new_connections_get_503_and_readiness_fails(service: Service) -> None:
    user, _ = signup_and_login(service)
    cookie = cookie_of(user)
    probe = service.client()
    assert connections_check(probe) == (200, "0/2")
    with connect(ws_url(service.port), additional_headers={"cookie": f"sid={cookie}"}):
        stream = EventStream(service.port)
        stream.next()
        assert connections_check(probe) == (503, "at capacity: 2/2")
        status, body, headers = refused(ws_url(service.port), cookie)
        assert (status, body["error"]["code"], body["error"]["message"]) == (503, "at_capacity", AT_CAPACITY)
        assert headers["retry-after"] == "1"
        sse = probe.get("/events")
        assert (sse.status, sse.error, sse.header("retry-after")) == (503, AT_CAPACITY, "1")
        stream.close()  # the server notices at its next heartbeat write
        wait_for(lambda: connections_check(probe) == (200, "1/2"), 15, "the closed stream released")
        with connect(ws_url(service.port), additional_headers={"cookie": f"sid={cookie}"}) as again:
            user.post("/products", {"sku": "cap-1", "name": "Cap", "price_cents": 1})
            assert '"product.created"' in str(again.recv(timeout=10))
    assert probe.metric("realtime_rejected_total", reason="at_capacity") == 2
