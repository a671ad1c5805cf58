"""Every Redis feature against a real 3-master Redis Cluster (REDIS_MODE=cluster, one seed node):
cache-aside, batch get across slots, sessions, rate limits and sharded pub/sub fan-out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sample_helpers import EventStream, Postgres, Service, seed_products

from testsupport.redis import RedisCluster


@pytest.fixture(scope="module")
def services(postgres: Postgres, redis_cluster: RedisCluster) -> Iterator[tuple[Service, Service]]:
    env = {
        "DATABASE_URL": postgres.dsn,
        "REDIS_URL": redis_cluster.seed_url,
        "REDIS_MODE": "cluster",
        "CACHE_ENABLED": "true",
        "SESSIONS_ENABLED": "true",
        "EVENTS_ENABLED": "true",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_ALGORITHM": "sliding_window",
        "RATE_LIMIT_IP_LIMIT": "10",
    }
    first, second = Service(env), Service(env)
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture(autouse=True)
def flushed(clean: None, redis_cluster: RedisCluster) -> None:
    redis_cluster.flushall()


def test_cache_hits_need_no_query_and_batches_span_slots(services: tuple[Service, Service], postgres: Postgres) -> None:
    seed_products(postgres, 20)
    client = services[0].client()
    assert client.get("/readyz").status == 200
    ids = list(range(1, 21))
    assert len(client.post("/products/batch-get", {"ids": ids}).json()["items"]) == 20  # fills 20 keys on 3 masters
    before = client.metric("db_queries_total")
    assert [p["id"] for p in client.post("/products/batch-get", {"ids": ids}).json()["items"]] == ids
    assert client.get("/products/7").json()["id"] == 7
    assert client.metric("db_queries_total") == before
    client.patch("/products/7", {"name": "Seven"})
    assert services[1].client().get("/products/7").json()["name"] == "Seven"


def test_sessions_work_across_processes(services: tuple[Service, Service]) -> None:
    first, second = services
    client = first.client()
    assert client.post("/users", {"email": "c@example.com", "name": "C", "password": "password1"}).status == 201
    assert client.post("/sessions", {"email": "c@example.com", "password": "password1"}).status == 201
    other = second.client()
    other.cookies.update(client.cookies)
    assert other.get("/me").json()["email"] == "c@example.com"


def test_rate_limit_is_shared_by_all_processes(services: tuple[Service, Service]) -> None:
    clients = [services[0].client(), services[1].client()]
    statuses = [clients[n % 2].get("/products").status for n in range(11)]
    assert statuses == [200] * 10 + [429]


def test_events_fan_out_through_sharded_pubsub(services: tuple[Service, Service]) -> None:
    writer, reader = services
    stream = EventStream(reader.port)
    try:
        stream.next()
        created = writer.client().post("/products", {"sku": "cl-1", "name": "Cluster", "price_cents": 1}).json()
        event = stream.next_change()
        assert (event["type"], event["data"]["id"]) == ("product.created", created["id"])
    finally:
        stream.close()
