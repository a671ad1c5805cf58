"""The Redis client: standalone or cluster (REDIS_MODE), with the few multi-key helpers that differ."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.asyncio import Redis, RedisCluster

RedisClient = Redis | RedisCluster


def connect(url: str, mode: str) -> RedisClient:
    """A client for REDIS_URL; in cluster mode the URL names one seed node and the rest are discovered."""
    if mode == "cluster":
        return RedisCluster.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    return Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, max_connections=200)


async def mget(client: RedisClient, keys: Sequence[str]) -> list[bytes | None]:
    """GET of many keys; on a cluster the keys may live on different slots (one request per node)."""
    if isinstance(client, RedisCluster):
        return list(await client.mget_nonatomic(list(keys)))
    return list(await client.mget(list(keys)))


async def ping(client: RedisClient, timeout: float) -> None:
    """PING within `timeout` seconds (every node's in cluster mode); raises when unreachable."""
    await asyncio.wait_for(client.ping(), timeout)
