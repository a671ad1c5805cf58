"""Rate limiting in Redis: token bucket and sliding window, IP and user tiers, 429 with Retry-After."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sample_helpers import Postgres, Service

from testsupport.redis import RedisServer

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture(scope="module")
def token_bucket(postgres: Postgres, redis_server: RedisServer) -> Iterator[Service]:
    svc = Service(
        {
            "DATABASE_URL": postgres.dsn,
            "REDIS_URL": redis_server.url,
            "RATE_LIMIT_ENABLED": "true",
            "RATE_LIMIT_ALGORITHM": "token_bucket",
            "RATE_LIMIT_BURST": "5",
            "RATE_LIMIT_IP_LIMIT": "6",
            "RATE_LIMIT_WINDOW_SECONDS": "60",
        }
    )
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def sliding_window(postgres: Postgres, redis_server: RedisServer) -> Iterator[Service]:
    svc = Service(
        {
            "DATABASE_URL": postgres.dsn,
            "REDIS_URL": redis_server.url,
            "SESSIONS_ENABLED": "true",
            "RATE_LIMIT_ENABLED": "true",
            "RATE_LIMIT_ALGORITHM": "sliding_window",
            "RATE_LIMIT_IP_LIMIT": "5",
            "RATE_LIMIT_USER_LIMIT": "8",
            "RATE_LIMIT_WINDOW_SECONDS": "60",
        }
    )
    yield svc
    svc.stop()


def test_token_bucket_rejects_the_request_over_the_burst(token_bucket: Service) -> None:
    client = token_bucket.client()
    replies = [client.get("/products?limit=1") for _ in range(6)]
    assert [r.status for r in replies] == [200] * 5 + [429]
    assert [r.header("ratelimit-remaining") for r in replies[:5]] == ["4", "3", "2", "1", "0"]
    assert all(r.header("ratelimit-limit") == "5" for r in replies)
    rejected = replies[-1]
    assert rejected.header("retry-after") in {"10", "11"}  # refill: 6 tokens a minute, one every 10 s
    assert rejected.error.startswith("ip rate limit exceeded: retry after 1")
    assert client.get("/healthz").status == 200  # probes are exempt
    assert client.metric("rate_limit_rejections_total", tier="ip") >= 1


def test_sliding_window_rejects_the_request_over_the_limit(sliding_window: Service) -> None:
    client = sliding_window.client()
    replies = [client.get("/products?limit=1") for _ in range(6)]
    assert [r.status for r in replies] == [200] * 5 + [429]
    assert [r.header("ratelimit-remaining") for r in replies[:5]] == ["4", "3", "2", "1", "0"]
    retry_after = int(replies[-1].header("retry-after") or 0)
    assert 1 <= retry_after <= 120
    assert replies[-1].header("ratelimit-limit") == "5"


def test_a_logged_in_user_has_their_own_tier(sliding_window: Service) -> None:
    client = sliding_window.client()
    assert client.post("/users", {"email": "u@example.com", "name": "U", "password": "password1"}).status == 201
    assert client.post("/sessions", {"email": "u@example.com", "password": "password1"}).status == 201
    statuses = [client.get("/me").status for _ in range(9)]
    assert statuses == [200] * 8 + [429]
    assert client.get("/me").error.startswith("user rate limit exceeded")
    anonymous = sliding_window.client()  # same IP, its own tier: 2 of 5 used by sign-up and login
    assert [anonymous.get("/healthz").status] + [anonymous.get("/products").status for _ in range(4)] == [
        200,
        200,
        200,
        200,
        429,
    ]
