"""Fixtures for the sample service tests: real Postgres (primary + streaming replica), Redis and a 3-member
NATS JetStream cluster on loopback, shared per session; `clean` empties the tables and Redis between tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sample_helpers import DATABASE, Postgres, reset, run_sample
from sample_jobs_helpers import QUEUE_OVERRIDES

from components.queue import QueueSpec
from components.settings import load
from testsupport.nats import NatsCluster
from testsupport.postgres import PostgresServer
from testsupport.redis import RedisCluster, RedisServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A primary with one streaming replica, the `sample` database migrated by `sample migrate`."""
    primary = PostgresServer.primary()
    try:
        primary.create_database(DATABASE)
        migrated = run_sample("migrate", {"DATABASE_URL": primary.dsn(DATABASE)})
        assert migrated.returncode == 0, migrated.stderr
        replica = primary.replica()
    except BaseException:
        primary.close()
        raise
    yield Postgres(primary, replica)
    replica.close()
    primary.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster.start(masters=3)
    yield cluster
    cluster.close()


@pytest.fixture
def clean(postgres: Postgres, redis_server: RedisServer) -> None:
    """Empty tables (ids restart at 1) and Redis, and let the replica catch up."""
    reset(postgres, redis_server)


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three nats-server members from the kit's config, provisioned by the kit's script (short ack wait)."""
    spec, problems = load(QueueSpec, QUEUE_OVERRIDES, "queue")
    assert spec is not None, problems
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"), spec)
    try:
        cluster.start()
        cluster.provision()
        yield cluster
    finally:
        cluster.close()
