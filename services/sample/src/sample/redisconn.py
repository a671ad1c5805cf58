"""The Redis client: standalone or cluster (REDIS_MODE), with the few multi-key helpers that differ."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

RedisClient = Redis | RedisCluster

POOL_SIZE = 200
POOL_WAIT_SECONDS = 2.0


def connect(url: str, mode: str) -> RedisClient:
    """A client for REDIS_URL; in cluster mode the URL names one seed node and the rest are discovered.

    A standalone client keeps at most POOL_SIZE connections; a command beyond them waits up to
    POOL_WAIT_SECONDS for one to come back (a burst queues instead of failing at once).
    """
    if mode == "cluster":
        return RedisCluster.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=POOL_WAIT_SECONDS, socket_timeout=2.0, socket_connect_timeout=2.0
    )
    return Redis(connection_pool=pool)


async def mget(client: RedisClient, keys: Sequence[str]) -> list[bytes | None]:
    """GET of many keys; on a cluster the keys may live on different slots (one request per node)."""
    if isinstance(client, RedisCluster):
        return list(await client.mget_nonatomic(list(keys)))
    return list(await client.mget(list(keys)))


async def ping(client: RedisClient, timeout: float) -> None:
    """PING within `timeout` seconds (every node's in cluster mode); raises when unreachable."""
    await asyncio.wait_for(client.ping(), timeout)
