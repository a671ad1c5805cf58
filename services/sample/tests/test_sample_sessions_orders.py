"""Sessions in Redis shared by two service processes, cookie attributes, sliding expiry, logout;
orders placed by the logged-in user, stock checks, and order pages without N+1 queries."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sample_helpers import PASSWORD, Client, Postgres, Service, seed_products, signup_and_login

from testsupport.redis import RedisServer

pytestmark = pytest.mark.usefixtures("clean")


def _env(postgres: Postgres, redis_server: RedisServer) -> dict[str, str]:
    return {
        "DATABASE_URL": postgres.dsn,
        "REDIS_URL": redis_server.url,
        "SESSIONS_ENABLED": "true",
        "SESSION_TTL_SECONDS": "600",
        "CACHE_ENABLED": "true",
    }


@pytest.fixture(scope="module")
def services(postgres: Postgres, redis_server: RedisServer) -> Iterator[tuple[Service, Service]]:
    first = Service(_env(postgres, redis_server))
    second = Service({**_env(postgres, redis_server), "COOKIE_SECURE": "true"})
    yield first, second
    first.stop()
    second.stop()


def test_login_sets_a_hardened_cookie(services: tuple[Service, Service]) -> None:
    insecure, secure = services
    secure.client().post("/users", {"email": "s@example.com", "name": "S", "password": PASSWORD})
    cookie = secure.client().post("/sessions", {"email": "s@example.com", "password": PASSWORD}).header("set-cookie")
    assert cookie is not None
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=lax", "path=/"} <= attributes
    plain = insecure.client().post("/sessions", {"email": "s@example.com", "password": PASSWORD}).header("set-cookie")
    assert plain is not None and "secure" not in plain.lower()


def test_a_session_made_on_one_process_works_on_the_other(services: tuple[Service, Service]) -> None:
    first, second = services
    client, user_id = signup_and_login(first)
    on_second = Client(second.port, cookies=dict(client.cookies))
    me = on_second.get("/me")
    assert me.status == 200 and me.json()["id"] == user_id
    assert on_second.request("DELETE", "/sessions").status == 204
    assert "sid" not in on_second.cookies
    stale = Client(first.port, cookies=dict(client.cookies))  # the old cookie, replayed after logout
    assert (stale.get("/me").status, stale.get("/me").error) == (
        401,
        "session: no valid session cookie, log in with POST /sessions",
    )


def test_session_expiry_slides_on_each_request(services: tuple[Service, Service], redis_server: RedisServer) -> None:
    client, _ = signup_and_login(services[0])
    key = "session:" + hashlib.sha256(client.cookies["sid"].encode()).hexdigest()
    redis_server.command("EXPIRE", key, "30")
    assert client.get("/me").status == 200
    assert int(redis_server.command("TTL", key)) > 500


def test_wrong_password_and_duplicate_email(services: tuple[Service, Service]) -> None:
    client, _ = signup_and_login(services[0])
    bad = client.post("/sessions", {"email": "ada@example.com", "password": "wrong password"})
    assert (bad.status, bad.error) == (401, "email or password: no user with this email and password")
    dup = client.post("/users", {"email": "ADA@example.com", "name": "Ada", "password": PASSWORD})
    assert (dup.status, dup.error) == (409, "email: 'ADA@example.com' is already registered")
    short = client.post("/users", {"email": "b@example.com", "name": "B", "password": "short"})
    assert (short.status, short.error) == (422, 'password: expected `str` of length >= 8, got "short"')


def test_orders_need_a_session(services: tuple[Service, Service], postgres: Postgres) -> None:
    seed_products(postgres, 1)
    anonymous = services[0].client().post("/orders", {"items": [{"product_id": 1, "quantity": 1}]})
    assert anonymous.status == 401
    client, _ = signup_and_login(services[0])
    named = client.post("/orders", {"user_id": 1, "items": [{"product_id": 1, "quantity": 1}]})
    assert (named.status, named.error) == (422, "user_id: not allowed with sessions on; the logged-in user orders")


def test_placing_an_order_decrements_stock_and_refreshes_the_cached_product(
    services: tuple[Service, Service], postgres: Postgres
) -> None:
    seed_products(postgres, 3)
    client, user_id = signup_and_login(services[0])
    assert client.get("/products/2").json()["stock"] == 1000  # cached now
    placed = client.post("/orders", {"items": [{"product_id": 2, "quantity": 5}, {"product_id": 3, "quantity": 1}]})
    assert placed.status == 201, placed.body
    order = placed.json()
    assert (order["user_id"], order["total_cents"]) == (user_id, 5 * 200 + 300)
    assert [(i["product_id"], i["quantity"], i["product_name"]) for i in order["items"]] == [
        (2, 5, "Product 2"),
        (3, 1, "Product 3"),
    ]
    assert services[1].client().get("/products/2").json()["stock"] == 995
    assert client.get(f"/orders/{order['id']}").json() == order


def test_insufficient_stock_and_unknown_product(services: tuple[Service, Service], postgres: Postgres) -> None:
    seed_products(postgres, 1)
    client, _ = signup_and_login(services[0])
    short = client.post("/orders", {"items": [{"product_id": 1, "quantity": 1000}, {"product_id": 1, "quantity": 1}]})
    assert (short.status, short.error) == (409, "items: product_id 1 quantity 1001, only 1000 in stock")
    missing = client.post("/orders", {"items": [{"product_id": 42, "quantity": 1}]})
    assert (missing.status, missing.error) == (404, "items: product_id 42 does not exist")
    zero = client.post("/orders", {"items": [{"product_id": 1, "quantity": 0}]})
    assert (zero.status, zero.error) == (422, "items[0].quantity: expected `int` >= 1, got 0")
    assert client.get("/products/1").json()["stock"] == 1000


def test_order_pages_load_items_for_the_whole_page_in_one_query(
    services: tuple[Service, Service], postgres: Postgres
) -> None:
    seed_products(postgres, 3)
    client, user_id = signup_and_login(services[0])
    for n in range(5):
        assert client.post("/orders", {"items": [{"product_id": 1 + n % 3, "quantity": 1}]}).status == 201
    before = client.metric("db_queries_total")
    page = client.get(f"/users/{user_id}/orders?limit=4")
    assert client.metric("db_queries_total") - before == 2  # the orders, then all their items
    body = page.json()
    assert [o["id"] for o in body["items"]] == [1, 2, 3, 4]
    assert all(len(o["items"]) == 1 for o in body["items"])
    rest = client.get(f"/users/{user_id}/orders?limit=4&cursor={body['next_cursor']}").json()
    assert ([o["id"] for o in rest["items"]], rest["next_cursor"]) == ([5], None)
    other, _ = signup_and_login(services[0], "eve@example.com")
    assert other.get(f"/users/{user_id}/orders").status == 403
    assert other.get("/orders/1").status == 404


@pytest.mark.parametrize("path", ["/users/{id}/orders?{query}", "/orders?user_id={id}&{query}"])
@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("limit=0", "limit: got '0', allowed: an integer from 1 to 100"),
        ("cursor=x", "cursor: got 'x', allowed: a cursor from a previous page's next_cursor"),
    ],
)
def test_a_bad_page_parameter_is_a_400_naming_it_even_for_someone_elses_orders(
    services: tuple[Service, Service], path: str, query: str, error: str
) -> None:
    _, user_id = signup_and_login(services[0])
    other, _ = signup_and_login(services[0], "eve@example.com")
    assert other.get(path.format(id=user_id, query="")).status == 403
    reply = other.get(path.format(id=user_id, query=query))
    assert (reply.status, reply.error) == (400, error)
