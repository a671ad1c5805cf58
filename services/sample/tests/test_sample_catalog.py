"""Catalog behaviour with the cache on: cache-aside, invalidation, stampede protection, HTTP caching,
pagination, field selection, batch get, and clear 4xx errors for bad input."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sample_helpers import Client, Postgres, Service, seed_products

from testsupport.redis import RedisServer

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture(scope="module")
def service(postgres: Postgres, redis_server: RedisServer) -> Iterator[Service]:
    svc = Service(
        {
            "DATABASE_URL": postgres.dsn,
            "DATABASE_REPLICA_URLS": postgres.replica_dsn,
            "REDIS_URL": redis_server.url,
            "CACHE_ENABLED": "true",
            "CACHE_TTL_SECONDS": "300",
            "HTTP_CACHE_MAX_AGE_SECONDS": "30",
        }
    )
    yield svc
    svc.stop()


@pytest.fixture
def client(service: Service) -> Client:
    return service.client()


def queries(client: Client) -> float:
    return client.metric("db_queries_total")


def test_second_read_is_served_from_cache_with_zero_db_queries(client: Client, postgres: Postgres) -> None:
    seed_products(postgres, 3)
    first = client.get("/products/2")
    assert first.status == 200 and first.json()["name"] == "Product 2"
    before_queries, before_hits = queries(client), client.metric("cache_requests_total", result="hit")
    second = client.get("/products/2")
    assert second.status == 200 and second.body == first.body
    assert queries(client) - before_queries == 0
    assert client.metric("cache_requests_total", result="hit") - before_hits == 1


def test_write_invalidates_and_the_next_read_returns_the_new_value(client: Client, postgres: Postgres) -> None:
    seed_products(postgres, 1)
    assert client.get("/products/1").json()["price_cents"] == 100  # now cached
    updated = client.patch("/products/1", {"price_cents": 4321, "name": "Renamed"})
    assert updated.status == 200 and updated.json()["version"] == 2
    fresh = Client(client.port)  # no read-your-writes cookie: must not see a stale cached copy either
    after = fresh.get("/products/1").json()
    assert (after["price_cents"], after["name"], after["version"]) == (4321, "Renamed", 2)


def test_concurrent_misses_load_the_row_once(client: Client, postgres: Postgres) -> None:
    seed_products(postgres, 1)
    before = queries(client)
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda _: Client(client.port).get("/products/1"), range(32)))
    assert {r.status for r in replies} == {200}
    assert queries(client) - before == 1


def test_missing_product_is_404_and_cached_briefly(client: Client) -> None:
    reply = client.get("/products/77")
    assert (reply.status, reply.error) == (404, "id: product 77 does not exist")
    before = queries(client)
    assert client.get("/products/77").status == 404
    assert queries(client) == before


def test_etag_turns_a_repeat_read_into_304_with_cache_control(client: Client, postgres: Postgres) -> None:
    seed_products(postgres, 1)
    first = client.get("/products/1")
    assert first.header("cache-control") == "public, max-age=30"
    etag = first.header("etag")
    assert etag and etag.startswith('W/"')
    again = client.get("/products/1", headers={"if-none-match": etag})
    assert (again.status, again.body, again.header("etag")) == (304, b"", etag)
    client.patch("/products/1", {"stock": 3})
    assert client.get("/products/1", headers={"if-none-match": etag}).status == 200


def test_large_responses_are_gzipped_when_accepted(client: Client, postgres: Postgres) -> None:
    seed_products(postgres, 50)
    plain = client.get("/products?limit=50")
    zipped = client.get("/products?limit=50", headers={"accept-encoding": "gzip"})
    assert plain.header("content-encoding") is None
    assert zipped.header("content-encoding") == "gzip" and len(zipped.body) < len(plain.body)
    assert gzip.decompress(zipped.body) == plain.body


def test_cursor_pages_cover_every_product_once(client: Client, postgres: Postgres) -> None:
    seed_products(postgres, 25)
    seen, path = [], "/products?limit=10&fields=id"
    while True:
        page = client.get(path).json()
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        path = f"/products?limit=10&fields=id&cursor={page['next_cursor']}"
    assert seen == list(range(1, 26))


def test_field_selection(client: Client, postgres: Postgres) -> None:
    seed_products(postgres, 2)
    assert client.get("/products/2?fields=id,price_cents").json() == {"id": 2, "price_cents": 200}
    assert client.get("/products?fields=name&limit=1").json()["items"] == [{"name": "Product 1"}]


def test_batch_get_keeps_order_lists_missing_and_second_time_needs_no_query(client: Client, postgres: Postgres) -> None:
    seed_products(postgres, 5)
    reply = client.post("/products/batch-get?fields=id", {"ids": [4, 99, 2, 4]})
    assert reply.status == 200
    assert reply.json() == {"items": [{"id": 4}, {"id": 2}], "missing": [99]}
    before = queries(client)
    assert client.post("/products/batch-get", {"ids": [2, 4, 99]}).json()["missing"] == [99]
    assert queries(client) == before


def test_create_conflict_and_location(client: Client) -> None:
    created = client.post("/products", {"sku": "new-1", "name": "New", "price_cents": 5})
    assert created.status == 201 and created.header("location") == f"/products/{created.json()['id']}"
    again = client.post("/products", {"sku": "new-1", "name": "Other", "price_cents": 5})
    assert (again.status, again.error) == (409, "sku: 'new-1' already exists")


def test_static_assets_are_cacheable(client: Client) -> None:
    image = client.get("/static/img/product-1.svg")
    assert image.status == 200 and image.body.startswith(b"<svg")
    assert image.header("cache-control") == "public, max-age=86400" and image.header("etag")


BAD_INPUT = [
    ("POST", "/products", b'{"sku": "x", "name": ', 400, "request body is not valid JSON: "),
    (
        "POST",
        "/products",
        b'{"sku": "x", "name": "n", "price_cents": 1, "colour": "red"}',
        422,
        "request body: object contains unknown field `colour`, not allowed",
    ),
    (
        "POST",
        "/products",
        b'{"sku": "x", "name": "n", "price_cents": "cheap"}',
        422,
        'price_cents: expected `int`, got "cheap"',
    ),
    (
        "POST",
        "/products",
        b'{"sku": "has space", "name": "n", "price_cents": 1}',
        422,
        "sku: expected `str` matching regex '^[A-Za-z0-9._-]+$(?!\\\\n)', got \"has space\"",
    ),
    (
        "POST",
        "/products/batch-get",
        b'{"ids": [' + b",".join(b"1" for _ in range(101)) + b"]}",
        422,
        "ids: expected `array` of length <= 100, got an array of 101 items",
    ),
    ("POST", "/products/batch-get", b'{"ids": [0]}', 422, "ids[0]: expected `int` >= 1, got 0"),
    (
        "POST",
        "/products/batch-get",
        b"[]",
        422,
        "request body: expected `object`, got an array of 0 items",
    ),
    (
        "GET",
        "/products?cursor=cHJvZHVjdHM6LTE",
        None,
        400,
        "cursor: position -1 out of range, allowed: 0 to 9223372036854775807",
    ),
    ("GET", "/products?cursor=b3JkZXJzOjU", None, 400, "cursor: got a 'orders' cursor, allowed: a 'products' cursor"),
    ("GET", "/products?cursor=!!", None, 400, "cursor: got '!!', allowed: a cursor from a previous page's next_cursor"),
    ("GET", "/products?limit=1000", None, 400, "limit: got '1000', allowed: an integer from 1 to 100"),
    (
        "GET",
        "/products?fields=id,secret",
        None,
        400,
        "fields: got 'id,secret', allowed: a comma-separated subset of id, sku",
    ),
    ("GET", "/products/abc", None, 400, "id: got 'abc', allowed: an integer from 1 to 9223372036854775807"),
    ("GET", "/products/99999999999999999999", None, 400, "id: got '99999999999999999999', allowed: an integer from 1"),
    (
        "PATCH",
        "/products/1",
        b"{}",
        422,
        "request body: no field to change, allowed: name, price_cents, stock, description",
    ),
    ("GET", "/nowhere", None, 404, "GET /nowhere: Not Found"),
    ("DELETE", "/products", None, 405, "DELETE /products: Method Not Allowed"),
]


@pytest.mark.parametrize(("method", "path", "raw", "status", "message"), BAD_INPUT, ids=[b[4][:40] for b in BAD_INPUT])
def test_bad_input_gets_a_clear_4xx(
    client: Client, method: str, path: str, raw: bytes | None, status: int, message: str
) -> None:
    reply = client.request(method, path, raw=raw)
    assert reply.status == status, reply.body
    assert reply.header("content-type") == "application/json"
    assert reply.error.startswith(message), reply.error


def test_wrong_content_type_is_415(client: Client) -> None:
    reply = client.request(
        "POST", "/products", raw=b"sku=x", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert (reply.status, reply.error) == (
        415,
        "content-type: got 'application/x-www-form-urlencoded', allowed: application/json",
    )


def test_oversized_body_is_413(client: Client) -> None:
    reply = client.request("POST", "/products", raw=b'{"name": "' + b"x" * 70_000 + b'"}')
    assert (reply.status, reply.error) == (413, "request body: more than 65536 bytes, allowed: at most 65536")


def test_openapi_document_lists_routes_and_schemas(client: Client) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/products", "/products/{id}", "/products/batch-get", "/orders", "/sessions", "/events"} <= set(
        spec["paths"]
    )
    assert spec["components"]["schemas"]["ProductCreate"]["additionalProperties"] is False
