"""Refresh-ahead and the stale grace of the product cache, against real Redis (standalone and cluster).

The cache runs in this process so that a test can wait for the exact moment an entry falls due (its
refresh time is in the stored value) and count the loads; the loads go through the same Coalescer as
the service's product reader, so "one load" means one `WHERE id = ANY($1)` query in the service.
The last test checks the wiring in the service itself, with Postgres and its query counter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from prometheus_client import REGISTRY
from sample import cacheentry
from sample.cache import Cache
from sample.coalesce import Coalescer
from sample.config import Settings
from sample.redisconn import RedisClient, connect
from sample.refresh import BATCH_SECONDS
from sample_helpers import Postgres, Service, seed_products

from testsupport.redis import RedisCluster, RedisServer

SETTLE = BATCH_SECONDS + 0.3  # one refresh batch and its Redis round trips


class Table:
    """Rows in memory behind a coalesced loader that records each fetch (each would be one query)."""

    def __init__(self, rows: dict[int, bytes]) -> None:
        self.rows = rows
        self.fetches: list[list[int]] = []
        self._reader: Coalescer[int, bytes] = Coalescer(self._fetch)

    async def _fetch(self, ids: list[int]) -> dict[int, bytes]:
        self.fetches.append(sorted(ids))
        return {i: self.rows[i] for i in ids if i in self.rows}

    def load(self, ident: int) -> Callable[[], Awaitable[bytes | None]]:
        return lambda: self._reader.get(ident)


def cache_on(client: RedisClient, ttl: int, ahead: int, stale: int) -> Cache:
    settings = Settings(cache_ttl_seconds=ttl, cache_refresh_ahead_percent=ahead, cache_stale_seconds=stale)
    return Cache(client, settings)


async def stored(client: RedisClient, key: str) -> bytes:
    """The entry once the background store after a miss has landed."""
    for _ in range(100):
        if (value := await client.get(key)) is not None:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"{key} was never stored")


async def until_due(client: RedisClient, keys: list[str]) -> None:
    """Sleep until every entry in `keys` is due for refresh."""
    latest = max([cacheentry.refresh_at_ms(await stored(client, key)) for key in keys])
    await asyncio.sleep(max(0, latest - cacheentry.now_ms()) / 1000 + 0.02)


async def due_entry(client: RedisClient) -> tuple[Cache, Table]:
    """A cache (TTL 2 s, refresh-ahead 50 %) holding p:1 = v1, now due for refresh."""
    cache, table = cache_on(client, ttl=2, ahead=50, stale=0), Table({1: b"v1"})
    assert await cache.get_or_load("p:1", table.load(1)) == b"v1"
    await until_due(client, ["p:1"])
    return cache, table


def refreshed() -> float:
    """cache_refreshes_total of this process."""
    return REGISTRY.get_sample_value("cache_refreshes_total") or 0.0


def run(scenario: Callable[[RedisClient], Awaitable[None]], url: str, mode: str = "standalone") -> None:
    async def main() -> None:
        client = connect(url, mode)
        try:
            await scenario(client)
        finally:
            await client.aclose()

    asyncio.run(main())


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    redis_server.command("FLUSHALL")
    yield redis_server.url


def test_a_due_entry_is_served_as_is_and_reloaded_once_in_the_background(redis_url: str) -> None:
    async def scenario(client: RedisClient) -> None:
        cache, table = await due_entry(client)
        table.rows[1] = b"v2"
        ttl_when_due = await client.pttl("p:1")
        refreshes = refreshed()
        readers = await asyncio.gather(*(cache.get_or_load("p:1", table.load(1)) for _ in range(10)))
        assert readers == [b"v1"] * 10  # nobody waits for the database
        await asyncio.sleep(SETTLE)
        assert table.fetches == [[1], [1]]  # the first miss, then one refresh for ten due reads
        assert refreshed() - refreshes == 1
        assert await cache.get_or_load("p:1", table.load(1)) == b"v2"
        assert await client.pttl("p:1") > ttl_when_due  # a whole new lifetime (1.5 s or more left, was 1.1 s at most)
        assert cacheentry.refresh_at_ms(await client.get("p:1")) > cacheentry.now_ms()

    run(scenario, redis_url)


def test_keys_due_in_one_window_are_reloaded_with_one_load(redis_url: str) -> None:
    async def scenario(client: RedisClient) -> None:
        ids = list(range(1, 21))
        cache, table = cache_on(client, ttl=2, ahead=50, stale=0), Table({i: b"%d" % i for i in ids})
        await asyncio.gather(*(cache.get_or_load(f"p:{i}", table.load(i)) for i in ids))
        filled = len(table.fetches)  # misses load as their locks are taken, in one or more batches
        await until_due(client, [f"p:{i}" for i in ids])
        await asyncio.gather(*(cache.get_or_load(f"p:{i}", table.load(i)) for i in ids))
        await asyncio.sleep(SETTLE)
        assert table.fetches[filled:] == [ids]
        refresh_times = [cacheentry.refresh_at_ms(await client.get(f"p:{i}")) for i in ids]
        assert min(refresh_times) > cacheentry.now_ms()  # every one renewed

    run(scenario, redis_url)


def test_one_process_reloads_a_key_that_every_process_reads(redis_url: str) -> None:
    async def scenario(client: RedisClient) -> None:
        shared = {1: b"row"}
        first, second = (cache_on(client, ttl=2, ahead=50, stale=0) for _ in range(2))
        tables = [Table(shared), Table(shared)]
        await first.get_or_load("p:1", tables[0].load(1))
        await until_due(client, ["p:1"])
        await asyncio.gather(first.get_or_load("p:1", tables[0].load(1)), second.get_or_load("p:1", tables[1].load(1)))
        await asyncio.sleep(SETTLE)
        assert len(tables[0].fetches) + len(tables[1].fetches) == 2  # the fill, and one refresh between both

    run(scenario, redis_url)


def test_a_write_during_a_refresh_wins_over_the_older_row(redis_url: str) -> None:
    async def scenario(client: RedisClient) -> None:
        cache, _ = await due_entry(client)
        read, write = asyncio.Event(), asyncio.Event()

        async def slow_load() -> bytes:
            read.set()  # the refresh has read the row...
            await write.wait()  # ...and a write commits and invalidates before it stores it
            return b"v1"

        refreshes = refreshed()
        assert await cache.get_or_load("p:1", slow_load) == b"v1"
        await asyncio.wait_for(read.wait(), 5)
        await cache.invalidate(["p:1"])
        write.set()
        await asyncio.sleep(SETTLE)
        assert await client.get("p:1") is None  # the next read loads the new row
        assert refreshed() == refreshes

    run(scenario, redis_url)


def test_stale_grace_serves_an_expired_entry_while_it_reloads(redis_url: str) -> None:
    async def scenario(client: RedisClient) -> None:
        table = Table({1: b"v1", 2: b"v1"})
        graced, strict = cache_on(client, ttl=1, ahead=0, stale=5), cache_on(client, ttl=1, ahead=0, stale=0)
        await graced.get_or_load("p:1", table.load(1))
        await strict.get_or_load("p:2", table.load(2))
        await until_due(client, ["p:1", "p:2"])  # with ahead=0 the refresh time is the end of freshness
        await asyncio.sleep(0.1)  # and p:2, stored a moment after its refresh time was set, has expired
        table.rows = {1: b"v2", 2: b"v2"}
        assert await graced.get_or_load("p:1", table.load(1)) == b"v1"  # expired, still served
        assert await strict.get_or_load("p:2", table.load(2)) == b"v2"  # gone: loaded on the reader's path
        await asyncio.sleep(SETTLE)
        assert await graced.get_or_load("p:1", table.load(1)) == b"v2"

    run(scenario, redis_url)


def test_a_failed_refresh_keeps_serving_the_entry(redis_url: str) -> None:
    async def scenario(client: RedisClient) -> None:
        cache, table = await due_entry(client)

        async def database_down() -> bytes:
            raise ConnectionError("primary unreachable")

        assert await cache.get_or_load("p:1", database_down) == b"v1"
        await asyncio.sleep(SETTLE)
        assert await cache.get_or_load("p:1", table.load(1)) == b"v1"  # claimed: not retried until CLAIM_MS
        assert table.fetches == [[1]]

    run(scenario, redis_url)


def test_refresh_works_across_the_slots_of_a_redis_cluster(redis_cluster: RedisCluster) -> None:
    redis_cluster.flushall()

    async def scenario(client: RedisClient) -> None:
        ids = list(range(1, 13))  # keys on every master
        cache, table = cache_on(client, ttl=2, ahead=50, stale=0), Table({i: b"v1" for i in ids})
        await asyncio.gather(*(cache.get_or_load(f"p:{i}", table.load(i)) for i in ids))
        filled = len(table.fetches)
        await until_due(client, [f"p:{i}" for i in ids])
        table.rows = {i: b"v2" for i in ids}
        await asyncio.gather(*(cache.get_or_load(f"p:{i}", table.load(i)) for i in ids))
        await asyncio.sleep(SETTLE)
        assert table.fetches[filled:] == [ids]
        assert [cacheentry.body(await client.get(f"p:{i}")) for i in ids] == [b"v2"] * len(ids)

    run(scenario, redis_cluster.seed_url, "cluster")


def test_the_service_refreshes_a_read_product_with_one_query(
    clean: None, postgres: Postgres, redis_server: RedisServer
) -> None:
    service = Service(
        {
            "DATABASE_URL": postgres.dsn,
            "REDIS_URL": redis_server.url,
            "CACHE_ENABLED": "true",
            "CACHE_TTL_SECONDS": "2",
            "CACHE_REFRESH_AHEAD_PERCENT": "50",
        }
    )
    try:
        seed_products(postgres, 1)
        client = service.client()
        assert client.get("/products/1").status == 200
        time.sleep(1.2)  # past the refresh time (at most 1.1 s), before expiry (at least 1.8 s)
        queries, misses = client.metric("db_queries_total"), client.metric("cache_requests_total", result="miss")
        assert client.get("/products/1").json()["id"] == 1
        time.sleep(SETTLE)
        assert client.metric("db_queries_total") - queries == 1
        assert client.metric("cache_refreshes_total") == 1
        assert client.metric("cache_requests_total", result="miss") == misses
    finally:
        service.stop()
