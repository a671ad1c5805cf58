"""Read/write splitting against a real streaming replica, read-your-writes, replica fallback, and
/readyz following the primary's availability. No Redis: every Redis feature is off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sample_helpers import Client, Postgres, Service, seed_products

from testsupport.process import eventually

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture(scope="module")
def service(postgres: Postgres) -> Iterator[Service]:
    svc = Service(
        {"DATABASE_URL": postgres.dsn, "DATABASE_REPLICA_URLS": postgres.replica_dsn, "READ_YOUR_WRITES_SECONDS": "30"}
    )
    yield svc
    svc.stop()


@pytest.fixture
def resume_replay(clean: None, postgres: Postgres) -> Iterator[None]:
    """A test may pause WAL replay on the replica (it then serves data as of that moment); resumed after."""
    yield
    postgres.replica.sql("SELECT pg_wal_replay_resume()")


def by_target(client: Client) -> tuple[float, float]:
    return client.metric("db_queries_total", target="primary"), client.metric("db_queries_total", target="replica")


def test_reads_go_to_the_replica(service: Service, postgres: Postgres) -> None:
    seed_products(postgres, 3)
    client = service.client()
    before = by_target(client)
    assert client.get("/products/1").status == 200
    assert client.get("/products?limit=2").status == 200
    primary, replica = by_target(client)
    assert (primary - before[0], replica - before[1]) == (0, 2)


@pytest.mark.usefixtures("resume_replay")
def test_a_write_followed_by_a_read_returns_the_new_value(service: Service, postgres: Postgres) -> None:
    seed_products(postgres, 1)
    postgres.replica.sql("SELECT pg_wal_replay_pause()")
    writer = service.client()
    assert writer.patch("/products/1", {"name": "New name"}).status == 200
    assert "ryw" in writer.cookies
    assert writer.get("/products/1").json()["name"] == "New name"
    # Another client, without the read-your-writes mark, reads the lagging replica: the old value.
    assert service.client().get("/products/1").json()["name"] == "Product 1"


def test_reads_fall_back_to_the_primary_while_no_replica_is_healthy(service: Service, postgres: Postgres) -> None:
    seed_products(postgres, 1)
    client = service.client()
    postgres.replica.stop()
    try:
        assert client.get("/products/1").status == 200  # the failing replica is retried on the primary
        assert eventually(lambda: client.metric("db_replicas_healthy") == 0)
        before = by_target(client)
        assert client.get("/products/1").json()["id"] == 1
        after = by_target(client)
        assert (after[0] - before[0], after[1] - before[1]) == (1, 0)
        assert client.get("/readyz").status == 200  # replicas are optional
    finally:
        postgres.replica.start()
    assert eventually(lambda: client.metric("db_replicas_healthy") == 1)
    before = by_target(client)
    client.get("/products/1")
    assert by_target(client)[1] - before[1] == 1


def test_readyz_is_503_while_postgres_is_stopped_and_200_after(service: Service, postgres: Postgres) -> None:
    client = service.client()
    assert client.get("/readyz").status == 200
    postgres.primary.stop()
    try:
        down = client.get("/readyz")
        assert down.status == 503
        assert down.json()["checks"]["postgres"].startswith("down: ")
        assert client.get("/healthz").status == 200  # liveness never calls a dependency
    finally:
        postgres.primary.start()
    assert eventually(lambda: client.get("/readyz").status == 200)
    postgres.replicated()
