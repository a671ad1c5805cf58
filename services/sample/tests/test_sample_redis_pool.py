"""The service's Redis client against a real redis-server: a burst of commands beyond the pool waits."""

from __future__ import annotations

import asyncio

from sample.redisconn import POOL_SIZE, connect

from testsupport.redis import RedisServer


def test_a_burst_beyond_the_pool_waits_for_connections_instead_of_failing(redis_server: RedisServer) -> None:
    async def burst() -> list[object]:
        client = connect(redis_server.url, "standalone")
        try:
            # every command takes a connection before any reply arrives: 3x the pool at once
            return await asyncio.gather(*(client.ping() for _ in range(3 * POOL_SIZE)), return_exceptions=True)
        finally:
            await client.aclose()

    replies = asyncio.run(burst())
    assert [r for r in replies if r is not True] == []
