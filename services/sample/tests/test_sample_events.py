"""Server-Sent Events: changes made on one process reach streams on another through Redis pub/sub,
with heartbeats while idle and resume by Last-Event-ID."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sample_helpers import EventStream, Postgres, Service

from testsupport.redis import RedisServer

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture(scope="module")
def services(postgres: Postgres, redis_server: RedisServer) -> Iterator[tuple[Service, Service]]:
    env = {
        "DATABASE_URL": postgres.dsn,
        "REDIS_URL": redis_server.url,
        "EVENTS_ENABLED": "true",
        "EVENTS_HEARTBEAT_SECONDS": "1",
    }
    first, second = Service(env), Service(env)
    yield first, second
    first.stop()
    second.stop()


def product(n: int) -> dict[str, object]:
    return {"sku": f"ev-{n}", "name": f"Event {n}", "price_cents": n}


def test_a_change_on_one_process_reaches_a_stream_on_the_other(services: tuple[Service, Service]) -> None:
    writer, reader = services
    stream = EventStream(reader.port)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("content-type", "").startswith("text/event-stream")
        assert stream.next() == {"retry": "2000"}
        created = writer.client().post("/products", product(1)).json()
        event = stream.next_change()
        assert (event["type"], event["data"]) == ("product.created", {"id": created["id"], "version": 1})
        writer.client().patch(f"/products/{created['id']}", {"stock": 9})
        assert stream.next_change()["type"] == "product.updated"
    finally:
        stream.close()


def test_idle_streams_get_heartbeats(services: tuple[Service, Service]) -> None:
    stream = EventStream(services[0].port)
    try:
        stream.next()  # retry hint
        assert stream.next() == {"comment": "heartbeat"}
    finally:
        stream.close()


def test_resume_with_last_event_id_replays_what_was_missed(services: tuple[Service, Service]) -> None:
    writer, reader = services
    stream = EventStream(reader.port)
    stream.next()
    writer.client().post("/products", product(1))
    seen = stream.next_change()
    stream.close()
    writer.client().post("/products", product(2))
    writer.client().post("/products", product(3))
    resumed = EventStream(reader.port, last_event_id=seen["id"])
    try:
        missed = [resumed.next_change(), resumed.next_change()]
        assert [e["data"]["id"] for e in missed] == [2, 3]
        assert missed[0]["id"] > seen["id"]
        writer.client().post("/products", product(4))
        assert resumed.next_change()["data"]["id"] == 4  # then live, without duplicates
    finally:
        resumed.close()


def test_a_bad_last_event_id_is_400(services: tuple[Service, Service]) -> None:
    reply = services[0].client().get("/events", headers={"last-event-id": "yesterday"})
    assert (reply.status, reply.error) == (400, "Last-Event-ID: got 'yesterday', allowed: an id from this stream")
