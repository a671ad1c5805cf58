"""The service and its OpenAPI document agree: free text without NUL, a 405's Allow header listing the
path's methods, the bounds of path ids, what `fields` accepts and that an update must change something."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from sample_helpers import Client, Postgres, Service, conforms, seed_products

from testsupport.redis import RedisServer

pytestmark = pytest.mark.usefixtures("clean")
MAX_ID = 2**63 - 1


@pytest.fixture(scope="module")
def client(postgres: Postgres, redis_server: RedisServer) -> Iterator[Client]:
    service = Service({"DATABASE_URL": postgres.dsn, "REDIS_URL": redis_server.url, "SESSIONS_ENABLED": "true"})
    yield service.client()
    service.stop()


@pytest.fixture(scope="module")
def spec(client: Client) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


NO_NUL = 'expected `str` without U+0000 (NUL), got "a\\u0000b"'
NUL_INPUT = [
    ("POST", "/users", "UserCreate", {"email": "u@example.com", "name": "a\x00b", "password": "long enough"}, "name"),
    ("POST", "/products", "ProductCreate", {"sku": "n-1", "name": "a\x00b", "price_cents": 1}, "name"),
    (
        "POST",
        "/products",
        "ProductCreate",
        {"sku": "n-2", "name": "ok", "price_cents": 1, "description": "a\x00b"},
        "description",
    ),
    ("PATCH", "/products/1", "ProductUpdate", {"description": "a\x00b"}, "description"),
]


@pytest.mark.parametrize(
    ("method", "path", "schema", "body", "field"), NUL_INPUT, ids=[f"{b[0]} {b[1]} {b[4]}" for b in NUL_INPUT]
)
def test_nul_in_free_text_is_a_422_naming_the_field_and_the_document_says_so(
    client: Client, spec: dict[str, Any], postgres: Postgres, method: str, path: str, schema: str, body: Any, field: str
) -> None:
    seed_products(postgres, 1)
    reply = client.request(method, path, body)
    assert (reply.status, reply.error) == (422, f"{field}: {NO_NUL}")
    assert not conforms(spec, schema, body)
    assert conforms(spec, schema, {**body, field: "ab"})


def test_nul_in_the_login_email_is_a_422(client: Client, spec: dict[str, Any]) -> None:
    body = {"email": "a\x00b@example.com", "password": "x"}
    reply = client.post("/sessions", body)
    assert (reply.status, reply.error) == (
        422,
        "email: expected `str` matching regex '^[^@\\\\s\\\\x00]+@[^@\\\\s\\\\x00]+$(?!\\\\n)',"
        ' got "a\\u0000b@example.com"',
    )
    assert not conforms(spec, "Login", body)


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


def test_ids_are_documented_and_checked_up_to_2_63_minus_1(client: Client, spec: dict[str, Any]) -> None:
    integer_ids = [
        param["schema"]
        for operations in spec["paths"].values()
        for operation in operations.values()
        for param in operation.get("parameters", [])
        if param["name"] in ("id", "user_id") and param["schema"]["type"] == "integer"
    ]
    assert len(integer_ids) == 6
    assert all((schema["minimum"], schema["maximum"]) == (1, MAX_ID) for schema in integer_ids)
    assert client.get(f"/orders/{MAX_ID}").error == f"id: order {MAX_ID} does not exist"
    reply = client.get(f"/orders/{MAX_ID + 1}")
    assert (reply.status, reply.error) == (400, f"id: got '{MAX_ID + 1}', allowed: an integer from 1 to {MAX_ID}")


FIELDS = [
    "id",
    "id,price_cents",
    " id , name ",
    "id,,name,",
    ",id",
    "id,id",
    "",
    ",",
    " ",
    "id,secret",
    "ID",
    "id name",
]


def test_fields_accepts_exactly_what_its_pattern_documents(
    client: Client, spec: dict[str, Any], postgres: Postgres
) -> None:
    seed_products(postgres, 1)
    schemas = [
        param["schema"]
        for operations in spec["paths"].values()
        for operation in operations.values()
        for param in operation.get("parameters", [])
        if param["name"] == "fields"
    ]
    assert len(schemas) == 3 and all(schema == schemas[0] for schema in schemas)
    pattern = re.compile(schemas[0]["pattern"])
    for value in FIELDS:
        status = client.get(f"/products/1?fields={quote(value)}").status
        assert (status, status == 200) == (status, bool(pattern.search(value))), value
    assert {pattern.search(value) is not None for value in FIELDS} == {True, False}


def test_an_update_must_change_something_in_the_document_too(
    client: Client, spec: dict[str, Any], postgres: Postgres
) -> None:
    seed_products(postgres, 1)
    assert not conforms(spec, "ProductUpdate", {})
    reply = client.patch("/products/1", {})
    assert (reply.status, reply.error) == (
        422,
        "request body: no field to change, allowed: name, price_cents, stock, description",
    )
    assert conforms(spec, "ProductUpdate", {"stock": 2})
    assert client.patch("/products/1", {"stock": 2}).status == 200


def test_a_product_with_fields_and_the_metrics_are_what_the_document_says(
    client: Client, spec: dict[str, Any], postgres: Postgres
) -> None:
    seed_products(postgres, 1)
    product = spec["paths"]["/products/{id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert conforms(spec, product, client.get("/products/1").json())
    assert conforms(spec, product, client.get("/products/1?fields=id,name").json())
    assert not conforms(spec, product, {})
    assert not conforms(spec, product, {"id": 1, "secret": 1})
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert (client.get("/metrics").header("content-type") or "").startswith("text/plain")


NOT_INTEGERS = ["1_0", " 1", "1 ", "+1", "\u0665", "\u00b2", "1.0", "0x1"]


@pytest.mark.parametrize("raw", NOT_INTEGERS, ids=ascii)
def test_an_id_or_limit_not_written_with_ascii_digits_is_a_400_naming_it(client: Client, raw: str) -> None:
    """int() read '1_0' as 10 and an Arabic-Indic five as 5; a superscript two passed str.isdigit(), then int()
    refused it: a 500."""
    shown = repr(raw)
    reply = client.get(f"/products/{quote(raw, safe='')}")
    assert (reply.status, reply.error) == (400, f"id: got {shown}, allowed: an integer from 1 to {MAX_ID}")
    reply = client.get(f"/products?limit={quote(raw, safe='')}")
    assert (reply.status, reply.error) == (400, f"limit: got {shown}, allowed: an integer from 1 to 100")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/users", {"email": "nl@example.com\n", "name": "N", "password": "long enough"}, "email"),
        ("/sessions", {"email": "nl@example.com\n", "password": "x"}, "email"),
        ("/products", {"sku": "nl-1\n", "name": "N", "price_cents": 1}, "sku"),
    ],
)
def test_a_final_newline_is_refused_as_the_document_says(
    client: Client, spec: dict[str, Any], path: str, body: dict[str, Any], field: str
) -> None:
    """Python's `$` matched before a final newline, so 'a@b\\n' was a second account beside 'a@b'."""
    reply = client.post(path, body)
    assert reply.status == 422 and reply.error.startswith(f"{field}: expected `str` matching regex"), reply.body
    schema = {"/users": "UserCreate", "/sessions": "Login", "/products": "ProductCreate"}[path]
    assert not conforms(spec, schema, body)
    assert conforms(spec, schema, {**body, field: body[field].rstrip()})


def test_pages_and_batches_are_what_the_document_says(client: Client, spec: dict[str, Any], postgres: Postgres) -> None:
    seed_products(postgres, 2)
    paths = spec["paths"]

    def documented(path: str, method: str) -> dict[str, Any]:
        schema: dict[str, Any] = paths[path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        return schema

    page = client.get("/products?fields=id,name").json()
    assert conforms(spec, documented("/products", "get"), page) and len(page["items"]) == 2
    assert not conforms(spec, documented("/products", "get"), {"items": [{}], "next_cursor": None})
    batch = client.post("/products/batch-get", {"ids": [1, 3]}).json()
    assert conforms(spec, documented("/products/batch-get", "post"), batch) and batch["missing"] == [3]
    assert not conforms(spec, documented("/products/batch-get", "post"), {"items": []})
    assert not conforms(spec, documented("/orders", "get"), {"items": [{"id": 1}], "next_cursor": None})
