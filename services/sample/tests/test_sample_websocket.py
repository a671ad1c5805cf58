"""GET /ws on two `sample serve` processes sharing Redis: fan-out across processes, topics (a user's own
orders only), resume from the bus history, the handshake's errors, client frames, compression and pings."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from sample_helpers import EventStream, Postgres, Service, seed_products, signup_and_login
from websockets.frames import Opcode
from websockets.sync.client import connect
from ws_helpers import (
    RawWebSocket,
    cookie_of,
    id_key,
    next_events,
    next_frame,
    product,
    realtime_env,
    refused,
    running,
    session_header,
    ws_url,
)

from testsupport.redis import RedisServer

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture(scope="module")
def services(postgres: Postgres, redis_server: RedisServer) -> Iterator[tuple[Service, Service]]:
    env = realtime_env(
        postgres,
        redis_server,
        EVENTS_HEARTBEAT_SECONDS="1",
    )
    with running(env, 2) as (first, second):
        yield first, second


def test_an_event_published_through_one_process_reaches_subscribers_on_both(
    services: tuple[Service, Service],
) -> None:
    first, second = services
    writer, _ = signup_and_login(first)
    cookie = session_header(writer)
    with (
        connect(ws_url(first.port), additional_headers=cookie) as near,
        connect(ws_url(second.port), additional_headers=cookie) as far,
    ):
        stream = EventStream(second.port)
        try:
            stream.next()  # the retry hint: the stream is subscribed
            created = writer.post("/products", product(1)).json()
            [on_first], [on_second] = next_events(near, 1), next_events(far, 1)
            assert on_first == on_second
            assert on_first["type"] == "product.created"
            assert on_first["data"] == {"id": created["id"], "version": 1}
            assert stream.next_change()["id"] == on_first["id"]  # the same event on SSE
        finally:
            stream.close()


def test_a_product_topic_gets_only_that_product(services: tuple[Service, Service]) -> None:
    first, second = services
    writer, _ = signup_and_login(first)
    header = session_header(writer)
    with connect(ws_url(second.port, "product:2"), additional_headers=header) as ws:
        for n in (1, 2, 3):
            writer.post("/products", product(n))
        writer.patch("/products/1", {"stock": 5})
        writer.patch("/products/2", {"stock": 5})
        events = next_events(ws, 2)
        assert [(e["type"], e["data"]["id"]) for e in events] == [("product.created", 2), ("product.updated", 2)]


def test_the_orders_topic_gets_only_the_callers_own_orders(
    services: tuple[Service, Service], postgres: Postgres
) -> None:
    first, second = services
    seed_products(postgres, 1)
    ada, ada_id = signup_and_login(first, "ada@example.com")
    bob, _ = signup_and_login(first, "bob@example.com")
    order = {"items": [{"product_id": 1, "quantity": 1}]}
    with connect(ws_url(second.port, "orders"), additional_headers=session_header(ada)) as ws:
        assert bob.post("/orders", order).status == 201
        mine = ada.post("/orders", order).json()
        [event] = next_events(ws, 1)  # Bob's order came first and did not arrive
        assert (event["type"], event["data"]["id"], event["data"]["user_id"]) == ("order.created", mine["id"], ada_id)


def test_resume_after_a_forced_disconnect_replays_exactly_the_missed_events(
    services: tuple[Service, Service],
) -> None:
    first, second = services
    writer, _ = signup_and_login(first)
    header = session_header(writer)
    with connect(ws_url(second.port), additional_headers=header) as ws:
        writer.post("/products", product(1))
        [seen] = next_events(ws, 1)
        ws.socket.shutdown(socket.SHUT_RDWR)  # the connection dies without a closing handshake
    for n in (2, 3, 4):
        writer.post("/products", product(n))
    with connect(ws_url(first.port, last_id=seen["id"]), additional_headers=header) as resumed:
        missed = next_events(resumed, 3)
        writer.patch("/products/4", {"stock": 1})
        [live] = next_events(resumed, 1)
    assert [e["data"]["id"] for e in missed] == [2, 3, 4]
    assert [id_key(e["id"]) for e in missed] == sorted({id_key(e["id"]) for e in missed})
    assert id_key(missed[0]["id"]) > id_key(seen["id"])
    assert (live["type"], live["data"]["id"]) == ("product.updated", 4)  # then live, no duplicate of 4


def test_subscribe_and_unsubscribe_frames_answer_with_the_full_set(services: tuple[Service, Service]) -> None:
    writer, _ = signup_and_login(services[0])
    header = session_header(writer)
    with connect(ws_url(services[0].port, "product:7"), additional_headers=header) as ws:
        ws.send(json.dumps({"op": "subscribe", "topics": ["orders", "products"]}))
        assert next_frame(ws) == {"op": "subscribed", "topics": ["orders", "product:7", "products"]}
        ws.send(json.dumps({"op": "unsubscribe", "topics": ["product:7", "orders"]}))
        assert next_frame(ws) == {"op": "subscribed", "topics": ["products"]}
        writer.post("/products", product(1))
        assert next_frame(ws)["type"] == "product.created"


BAD_FRAMES = [
    ("hello", """message: got 'hello', allowed: a JSON object {"op": "subscribe" or "unsubscribe", "topics": [...]}"""),
    ('{"op": "watch", "topics": []}', "op: got 'watch', allowed: subscribe or unsubscribe"),
    (
        '{"op": "subscribe", "topics": "products"}',
        "topics: got 'products', allowed: a list of products,"
        " product:<id> (id 1 to 9223372036854775807) or orders, at most 100",
    ),
    (
        '{"op": "subscribe", "topics": ["product:0"]}',
        "topics: got 'product:0', allowed: products, product:<id> (id 1 to 9223372036854775807) or orders, at most 100",
    ),
]


@pytest.mark.parametrize(("frame", "message"), BAD_FRAMES, ids=["not-json", "op", "topics-type", "topic"])
def test_an_invalid_frame_gets_an_error_frame_and_the_connection_stays(
    services: tuple[Service, Service], frame: str, message: str
) -> None:
    writer, _ = signup_and_login(services[0])
    header = session_header(writer)
    with connect(ws_url(services[0].port), additional_headers=header) as ws:
        ws.send(frame)
        assert next_frame(ws) == {"op": "error", "code": "invalid_message", "message": message}
        writer.post("/products", product(1))
        assert next_frame(ws)["type"] == "product.created"


def test_the_handshake_without_a_session_cookie_is_a_401(services: tuple[Service, Service]) -> None:
    assert refused(ws_url(services[0].port))[:2] == (
        401,
        {
            "error": {
                "status": 401,
                "code": "not_logged_in",
                "message": "session: no valid session cookie, log in with POST /sessions",
            }
        },
    )
    assert refused(ws_url(services[0].port), cookie="forged")[0] == 401


BAD_QUERIES = [
    (
        "products,bogus",
        None,
        "topics: got 'bogus', allowed: products, product:<id> (id 1 to 9223372036854775807) or orders, at most 100",
    ),
    (
        "product:9223372036854775808",
        None,
        "topics: got 'product:9223372036854775808', allowed: products, product:<id>"
        " (id 1 to 9223372036854775807) or orders, at most 100",
    ),
    ("products", "yesterday", "last_id: got 'yesterday', allowed: an event id from this stream, <ms>-<seq>"),
    (
        "products",
        "18446744073709551616-0",
        "last_id: got '18446744073709551616-0', allowed: an event id from this stream, <ms>-<seq>",
    ),
    (
        "products,",
        None,
        "topics: got '', allowed: products, product:<id> (id 1 to 9223372036854775807) or orders, at most 100",
    ),
]


@pytest.mark.parametrize(
    ("topics", "last_id", "message"),
    BAD_QUERIES,
    ids=["topic", "product-id", "last-id", "last-id-range", "empty-topic"],
)
def test_bad_topics_or_last_id_are_a_400_naming_the_parameter(
    services: tuple[Service, Service], topics: str, last_id: str | None, message: str
) -> None:
    writer, _ = signup_and_login(services[0])
    status, body, _ = refused(ws_url(services[0].port, topics, last_id), cookie_of(writer))
    assert (status, body) == (400, {"error": {"status": 400, "code": "invalid_parameter", "message": message}})


def test_a_plain_get_is_told_to_upgrade_after_its_query_is_checked(services: tuple[Service, Service]) -> None:
    reply = services[0].client().get("/ws?topics=products")
    assert (reply.status, reply.error) == (426, "Upgrade: missing, allowed: websocket (a WebSocket handshake)")
    assert reply.header("upgrade") == "websocket"
    reply = services[0].client().get("/ws?last_id=now")
    assert (reply.status, reply.error) == (400, "last_id: got 'now', allowed: an event id from this stream, <ms>-<seq>")


def test_permessage_deflate_is_negotiated_when_offered(services: tuple[Service, Service]) -> None:
    writer, _ = signup_and_login(services[0])
    offered = RawWebSocket(services[0].port, "/ws?topics=products", cookie_of(writer), deflate=True)
    plain = RawWebSocket(services[0].port, "/ws?topics=products", cookie_of(writer), deflate=False)
    try:
        assert offered.response.status_code == plain.response.status_code == 101
        assert "permessage-deflate" in offered.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "Sec-WebSocket-Extensions" not in plain.response.headers
        for n in range(10):
            writer.post("/products", product(n))
        inflated = [json.loads(offered.next_frame().data) for _ in range(10)]
        assert inflated == [json.loads(plain.next_frame().data) for _ in range(10)]
        assert offered.received < plain.received / 2  # the same frames, compressed on the wire
    finally:
        offered.close()
        plain.close()


def test_with_compression_off_an_offer_of_deflate_is_declined(postgres: Postgres, redis_server: RedisServer) -> None:
    with running(realtime_env(postgres, redis_server, WS_COMPRESSION="false"), 1) as (service,):
        writer, _ = signup_and_login(service)
        offered = RawWebSocket(service.port, "/ws?topics=products", cookie_of(writer), deflate=True)
        try:
            assert offered.response.status_code == 101
            assert "Sec-WebSocket-Extensions" not in offered.response.headers
            created = writer.post("/products", product(1)).json()
            assert json.loads(offered.next_frame().data)["data"]["id"] == created["id"]  # plain frames
        finally:
            offered.close()


def test_the_server_pings_an_idle_connection(services: tuple[Service, Service]) -> None:
    writer, _ = signup_and_login(services[0])
    raw = RawWebSocket(services[0].port, "/ws?topics=products", cookie_of(writer))
    try:
        pings = [raw.next_frame().opcode for _ in range(2)]  # EVENTS_HEARTBEAT_SECONDS=1, answered each time
        assert pings == [Opcode.PING, Opcode.PING]
    finally:
        raw.close()


def test_the_connections_gauge_counts_both_transports(services: tuple[Service, Service]) -> None:
    service = services[1]
    writer, _ = signup_and_login(service)
    client = service.client()

    def gauge(transport: str) -> float:
        return client.metric("realtime_connections", transport=transport)

    before = (gauge("websocket"), gauge("sse"))
    with connect(ws_url(service.port), additional_headers=session_header(writer)):
        stream = EventStream(service.port)
        stream.next()
        assert (gauge("websocket"), gauge("sse")) == (before[0] + 1, before[1] + 1)
        stream.close()
    assert "sse_clients" not in client.get("/metrics").body.decode()


def test_with_events_off_the_handshake_is_a_404(postgres: Postgres, redis_server: RedisServer) -> None:
    env = {"DATABASE_URL": postgres.dsn, "REDIS_URL": redis_server.url, "SESSIONS_ENABLED": "true"}
    with running(env, 1) as (service,):
        writer, _ = signup_and_login(service)
        status, body, _ = refused(ws_url(service.port), cookie_of(writer))
        message = "events: off in this deployment (EVENTS_ENABLED=false)"
        assert (status, body) == (404, {"error": {"status": 404, "code": "events_disabled", "message": message}})
        reply = service.client().get("/realtime/connections")
        assert (reply.status, reply.error) == (404, message)
