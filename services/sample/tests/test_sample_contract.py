"""The service and its OpenAPI document agree: a 405's Allow header lists exactly the path's methods."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sample_helpers import Client, Postgres, Service

from testsupport.redis import RedisServer

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture(scope="module")
def client(postgres: Postgres, redis_server: RedisServer) -> Iterator[Client]:
    service = Service({"DATABASE_URL": postgres.dsn, "REDIS_URL": redis_server.url, "SESSIONS_ENABLED": "true"})
    yield service.client()
    service.stop()


@pytest.fixture(scope="module")
def spec(client: Client) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def test_a_wrong_method_is_a_405_allowing_exactly_the_documented_methods(client: Client, spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        allowed = {method.upper() for method in operations} | ({"HEAD"} if "get" in operations else set())
        assert "PUT" not in allowed
        url = path.replace("{id}", "1")
        reply = client.request("PUT", url)
        assert (reply.status, reply.error) == (405, f"PUT {url}: Method Not Allowed"), path
        assert reply.header("allow") == ", ".join(sorted(allowed)), path
    assert client.request("OPTIONS", "/products").header("allow") == "GET, HEAD, POST"


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_batch_get_is_its_own_path_not_a_product_id(client: Client, method: str) -> None:
    reply = client.request(method, "/products/batch-get")
    assert (reply.status, reply.error) == (405, f"{method} /products/batch-get: Method Not Allowed")
    assert reply.header("allow") == "POST"
