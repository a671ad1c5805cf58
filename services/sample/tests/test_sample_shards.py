"""Sharding against real PostgreSQL instances on loopback: a main group and three shard groups.

The service runs as `sample serve` with the shard env the kit renders (SHARD_GROUPS, SHARD_<i>_URL,
SHARD_MAP); moves run as `sample shards move`, exactly as the Job would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sample import jobkinds
from sample.config import load_settings
from sample.db import Database
from sample.shards import ShardMap, Shards, logical_shard, order_logical_shard, rebalance, shard_settings
from sample_helpers import Client, Service, run_sample
from sample_jobs_helpers import jobs_env, start, wait_finished

from testsupport.nats import NatsCluster
from testsupport.postgres import PostgresServer
from testsupport.redis import RedisServer

pytestmark = pytest.mark.integration

GROUPS = ("pg-shard-0", "pg-shard-1", "pg-shard-2")
LOGICAL = 64
TOKEN = "admin-test-token"
_databases = itertools.count()


def initial_map() -> ShardMap:
    """Two groups in use, the third one empty: the target of moves."""
    used = GROUPS[:2]
    return ShardMap(1, LOGICAL, used, tuple(used[i % 2] for i in range(LOGICAL)))


@pytest.fixture(scope="module")
def servers() -> Iterator[list[PostgresServer]]:
    """The main group's server, then one server per shard group."""
    started: list[PostgresServer] = []
    try:
        for _ in range(1 + len(GROUPS)):
            started.append(PostgresServer.primary())
        yield started
    finally:
        for server in started:
            server.close()


@dataclass
class Deployment:
    main: PostgresServer
    groups: dict[str, PostgresServer]
    database: str
    env: dict[str, str]

    def main_sql(self, statement: str) -> str:
        return self.main.sql(statement, self.database)

    def group_sql(self, group: str, statement: str) -> str:
        return self.groups[group].sql(statement, self.database)

    def count(self, group: str, table: str, where: str = "true") -> int:
        return int(self.group_sql(group, f"SELECT count(*) FROM {table} WHERE {where}"))

    def shards(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
        return subprocess.run(
            [sys.executable, "-m", "sample", "shards", *args],
            env={**env, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def deployment(servers: list[PostgresServer]) -> Deployment:
    """Fresh databases on every server, migrated by `sample migrate` (main, map seeded, each group)."""
    database = f"shards{next(_databases)}"
    for server in servers:
        server.create_database(database)
    main, groups = servers[0], dict(zip(GROUPS, servers[1:], strict=True))
    env = {
        "DATABASE_URL": main.dsn(database),
        "SHARD_GROUPS": ",".join(GROUPS),
        "SHARD_MAP": json.dumps(initial_map().to_dict()),
        "SHARD_MAP_REFRESH_SECONDS": "0.2",
        "ADMIN_TOKEN": TOKEN,
        **{f"SHARD_{i}_URL": server.dsn(database) for i, server in enumerate(servers[1:])},
    }
    migrated = run_sample("migrate", env)
    assert migrated.returncode == 0, migrated.stderr
    deployment = Deployment(main, groups, database, env)
    deployment.main_sql(
        "INSERT INTO products (sku, name, price_cents, stock)"
        " SELECT 'sku-' || g, 'Product ' || g, 100 * g, 100000 FROM generate_series(1, 5) g"
    )
    return deployment


def create_users(client: Client, count: int, prefix: str = "u") -> list[int]:
    ids = []
    for n in range(count):
        reply = client.post("/users", {"email": f"{prefix}{n}@example.com", "name": f"U{n}", "password": "password1"})
        assert reply.status == 201, reply.body
        ids.append(reply.json()["id"])
    return ids


def order(client: Client, user_id: int, product_id: int = 1) -> int:
    reply = client.post("/orders", {"user_id": user_id, "items": [{"product_id": product_id, "quantity": 1}]})
    assert reply.status == 201, reply.body
    return int(reply.json()["id"])


def test_python_and_sql_shard_functions_agree(deployment: Deployment) -> None:
    ids = [*range(1, 3001), -1, -(2**63), 2**63 - 1, 0, 2**40 + 7]
    values = ",".join(f"({i})" for i in ids)
    rows = deployment.main_sql(f"SELECT string_agg(shard_of(x, {LOGICAL})::text, ',') FROM (VALUES {values}) v(x)")
    assert [int(n) for n in rows.split(",")] == [logical_shard(i, LOGICAL) for i in ids]


def test_10000_users_spread_evenly_over_groups() -> None:
    """The figure for docs/shards.md: users 1..10000 (the ids `user_ids` hands out) per group."""
    current = initial_map()
    three = current
    for logical in rebalance(current, GROUPS[2]):
        three = three.moved(logical, GROUPS[2])
    print()
    for shard_map in (current, three):
        users = Counter(shard_map.group_of(logical_shard(user, LOGICAL)) for user in range(1, 10001))
        fair = 10000 / len(shard_map.groups)
        print(f"{len(shard_map.groups)} groups, {LOGICAL} logical shards, 10000 users (fair share {fair:.0f}):")
        for group in shard_map.groups:
            print(f"  {group}: {users[group]:5d} users ({(users[group] - fair) / fair:+.1%})")
        assert all(abs(users[group] - fair) <= 0.10 * fair for group in shard_map.groups), users
    per_logical = Counter(logical_shard(user, LOGICAL) for user in range(1, 10001))
    print(f"  per logical shard: min {min(per_logical.values())}, max {max(per_logical.values())}, fair 156")


def test_adding_a_group_moves_only_its_share_of_logical_shards() -> None:
    current = initial_map()
    moves = rebalance(current, GROUPS[2])
    assert len(moves) == LOGICAL // 3 == 21 and len(set(moves)) == 21
    after = current
    for logical in moves:
        after = after.moved(logical, GROUPS[2])
    changed = [n for n in range(LOGICAL) if after.group_of(n) != current.group_of(n)]
    assert changed == sorted(moves)
    assert Counter(after.assignment) == {"pg-shard-0": 22, "pg-shard-1": 21, "pg-shard-2": 21}
    users_moved = sum(after.group_of(logical_shard(u, LOGICAL)) == GROUPS[2] for u in range(1, 10001))
    assert abs(users_moved - 10000 / 3) <= 0.10 * 10000 / 3


def test_user_scoped_rows_live_only_in_their_group_and_reads_find_them(deployment: Deployment) -> None:
    service = Service(deployment.env)
    try:
        client = service.client()
        users = create_users(client, 24)
        assert users == list(range(1, 25))  # ids from the main group's sequence, across groups
        orders = {user: order(client, user, 1 + user % 5) for user in users}
        assert client.post("/users", {"email": "U3@example.com", "name": "X", "password": "password1"}).status == 409
        current = initial_map()
        for user in users:
            home = current.group_of(logical_shard(user, LOGICAL))
            for group in GROUPS:
                expected = 1 if group == home else 0
                assert deployment.count(group, "users", f"id = {user}") == expected, (user, group)
                assert deployment.count(group, "orders", f"user_id = {user}") == expected, (user, group)
            assert order_logical_shard(orders[user]) == logical_shard(user, LOGICAL)
            assert client.get(f"/users/{user}").json()["id"] == user
            fetched = client.get(f"/orders/{orders[user]}").json()
            assert fetched["user_id"] == user and fetched["items"][0]["product_name"] == f"Product {1 + user % 5}"
            assert [o["id"] for o in client.get(f"/users/{user}/orders").json()["items"]] == [orders[user]]
        assert {deployment.count(g, "users") for g in GROUPS[:2]} != {0}  # both groups hold users
        assert deployment.count(GROUPS[2], "users") == 0
        assert deployment.main_sql("SELECT count(*) FROM users") == "0"  # only the directory is in main
        assert deployment.main_sql("SELECT count(*) FROM user_directory") == "24"
        stock = deployment.main_sql("SELECT sum(stock) FROM products")
        assert int(stock) == 5 * 100000 - 24
        missing = client.post("/orders", {"user_id": 999999, "items": [{"product_id": 1, "quantity": 1}]})
        assert missing.status == 404 and "user 999999" in missing.error
        assert deployment.main_sql("SELECT sum(stock) FROM products") == stock  # the stock was given back
    finally:
        service.stop()
        assert "Traceback" not in service.output(), service.output()


def test_admin_listing_merges_every_group_newest_first(deployment: Deployment) -> None:
    service = Service(deployment.env)
    try:
        client = service.client()
        users = create_users(client, 10)
        placed = [order(client, user) for user in users for _ in range(3)]
        auth = {"authorization": f"Bearer {TOKEN}"}
        seen: list[int] = []
        path = "/orders?limit=7"
        while True:
            page = client.get(path, headers=auth).json()
            seen += [o["id"] for o in page["items"]]
            if page["next_cursor"] is None:
                break
            path = f"/orders?limit=7&cursor={page['next_cursor']}"
        assert seen == sorted(placed, reverse=True)
        forbidden = client.get("/orders")
        assert forbidden.status == 403 and "ADMIN_TOKEN" in forbidden.error
    finally:
        service.stop()
        assert "Traceback" not in service.output(), service.output()


def shard_rows(deployment: Deployment, group: str, logical: int) -> dict[str, list[str]]:
    """Every row of the logical shard on `group`, as text, per table."""
    where = {
        "users": f"shard_of(id, {LOGICAL}) = {logical}",
        "orders": f"shard_of(user_id, {LOGICAL}) = {logical}",
        "order_items": f"order_id IN (SELECT id FROM orders WHERE shard_of(user_id, {LOGICAL}) = {logical})",
    }
    return {
        table: deployment.group_sql(group, f"SELECT t::text FROM {table} t WHERE {cond} ORDER BY 1").splitlines()
        for table, cond in where.items()
    }


def test_moving_a_logical_shard_under_writes_loses_and_duplicates_nothing(deployment: Deployment) -> None:
    service = Service(deployment.env)
    try:
        client = service.client()
        users = create_users(client, 40)
        logical = Counter(logical_shard(u, LOGICAL) for u in users).most_common(1)[0][0]
        movers = [u for u in users if logical_shard(u, LOGICAL) == logical]
        source, target = initial_map().group_of(logical), GROUPS[2]
        for user in users:
            order(client, user)
        before = shard_rows(deployment, source, logical)
        assert len(before["users"]) == len(movers) and before["orders"]

        acknowledged: list[int] = []
        refused: list[str] = []
        stop = threading.Event()

        def write() -> None:  # orders for the moving shard's users, until the move is done
            writer = service.client()
            for user in itertools.cycle(movers):
                if stop.is_set():
                    return
                reply = writer.post("/orders", {"user_id": user, "items": [{"product_id": 2, "quantity": 1}]})
                if reply.status == 201:
                    acknowledged.append(reply.json()["id"])
                else:
                    assert reply.status == 503, reply.body
                    refused.append(reply.header("retry-after") or "")

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.3)
        try:
            moved = deployment.shards("move", "--logical", str(logical), "--to", target, "--drain-seconds", "1")
        finally:
            time.sleep(0.3)
            stop.set()
            writer.join(timeout=30)
        assert moved.returncode == 0, moved.stderr
        report = json.loads(moved.stdout)
        print(f"\nmove report: {json.dumps(report)}")
        print(f"writes during the move: {len(acknowledged)} stored, {len(refused)} refused (503)")
        assert report["from"] == source and report["to"] == target and report["version"] == 2
        assert acknowledged, "no write went through while the move ran"
        assert set(refused) <= {"1"}

        after = shard_rows(deployment, target, logical)
        assert shard_rows(deployment, source, logical) == {"users": [], "orders": [], "order_items": []}
        assert set(before["users"]) == set(after["users"]) and len(after["users"]) == len(movers)
        assert set(before["orders"]) <= set(after["orders"])  # nothing lost, nothing changed
        stored = [int(row.split(",")[0].lstrip("(")) for row in after["orders"]]
        assert len(stored) == len(set(stored))  # nothing duplicated
        assert set(acknowledged) <= set(stored)  # every acknowledged write is there
        assert len(stored) == len(before["orders"]) + len(acknowledged)  # and nothing else
        for table in ("users", "orders"):  # ids exist exactly once over all groups
            union = [deployment.group_sql(g, f"SELECT id FROM {table}") for g in GROUPS]
            all_ids = [line for text in union for line in text.splitlines()]
            assert len(all_ids) == len(set(all_ids))

        # the running service follows the new map: reads and writes of the moved users go to the target
        user = movers[0]
        assert client.get(f"/users/{user}").status == 200
        new_order = order(client, user)
        assert deployment.count(target, "orders", f"id = {new_order}") == 1
        assert deployment.count(source, "orders", f"id = {new_order}") == 0
        assert client.get(f"/orders/{new_order}").json()["user_id"] == user
        status = json.loads(deployment.shards("status").stdout)
        assert status["version"] == 2 and logical in status["owned"][target]
    finally:
        service.stop()
        assert "Traceback" not in service.output(), service.output()


def test_move_refuses_bad_arguments_with_the_allowed_values(deployment: Deployment) -> None:
    wrong_group = deployment.shards("move", "--logical", "3", "--to", "pg-shard-9")
    assert wrong_group.returncode == 1
    assert "--to: got 'pg-shard-9', allowed: one of SHARD_GROUPS" in wrong_group.stderr
    out_of_range = deployment.shards("move", "--logical", "64", "--to", "pg-shard-2")
    assert "--logical: got 64, allowed: 0 to 63" in out_of_range.stderr
    same = deployment.shards("move", "--logical", "1", "--to", "pg-shard-1")
    assert "--to: logical shard 1 is already on pg-shard-1 (map version 1)" in same.stderr
    plan = json.loads(deployment.shards("plan", "--add", "pg-shard-2").stdout)
    assert plan["version"] == 1 and len(plan["move"]) == 21


def test_an_order_that_fails_after_taking_stock_leaves_no_stale_product_in_the_cache(
    deployment: Deployment, redis_server: RedisServer
) -> None:
    redis_server.command("FLUSHALL")
    service = Service({**deployment.env, "REDIS_URL": redis_server.url, "CACHE_ENABLED": "true"})
    try:
        client = service.client()
        before = client.get("/products/2").json()  # now cached
        missing = client.post("/orders", {"user_id": 999999, "items": [{"product_id": 2, "quantity": 1}]})
        assert missing.status == 404
        after = Client(service.port).get("/products/2").json()  # no read-your-writes cookie: the cache answers
        version = int(deployment.main_sql("SELECT version FROM products WHERE id = 2"))
        assert (after["stock"], after["version"]) == (before["stock"], version) and version == before["version"] + 2
    finally:
        service.stop()


def test_sessions_and_job_receipts_read_the_users_group(deployment: Deployment, redis_server: RedisServer) -> None:
    service = Service({**deployment.env, "REDIS_URL": redis_server.url, "SESSIONS_ENABLED": "true"})
    try:
        client = service.client()
        [user] = create_users(client, 1, prefix="login")
        assert client.post("/sessions", {"email": "LOGIN0@example.com", "password": "password1"}).status == 201
        assert client.get("/me").json()["id"] == user
        placed = client.post("/orders", {"items": [{"product_id": 3, "quantity": 2}]})
        assert placed.status == 201 and placed.json()["user_id"] == user
        assert client.post("/sessions", {"email": "login0@example.com", "password": "wrong-password"}).status == 401
    finally:
        service.stop()
        assert "Traceback" not in service.output(), service.output()
    receipt = asyncio.run(receipt_of(deployment.env, placed.json()["id"]))
    assert f"user {user}" in receipt["receipt"] and "2 x Product 3 @ 3.00 = 6.00" in receipt["receipt"]


async def receipt_of(env: dict[str, str], order_id: int) -> dict[str, Any]:
    """What a worker answers for an `order-receipt` job, with the worker's own pools."""
    settings = load_settings(env)
    sharding = shard_settings(env)
    assert sharding is not None
    db = Database(settings)
    shards = Shards(settings, sharding, db)
    await db.open()
    await shards.open()
    try:
        return await jobkinds.run(db, "order-receipt", json.dumps({"order_id": order_id}).encode(), shards)
    finally:
        await shards.close()
        await db.close()


def test_migrate_refuses_an_environment_without_a_group_the_live_map_uses(deployment: Deployment) -> None:
    moved = initial_map().moved(5, GROUPS[2])
    deployment.main_sql(f"INSERT INTO shard_map (version, map) VALUES (2, '{json.dumps(moved.to_dict())}')")
    env = {**deployment.env, "SHARD_GROUPS": "pg-shard-0,pg-shard-1"}
    del env["SHARD_2_URL"]
    result = run_sample("migrate", env)
    assert result.returncode == 2
    assert "SHARD_GROUPS: lacks ['pg-shard-2'], which shard map version 2 still uses" in result.stderr


def test_jobs_end_to_end_read_orders_from_their_group(
    deployment: Deployment, redis_server: RedisServer, nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Phase 6 with shards: POST /jobs checks ownership in the user's group, `sample worker` reads it there."""
    env = {**deployment.env, **jobs_env(nats_cluster), "REDIS_URL": redis_server.url, "SESSIONS_ENABLED": "true"}
    api, anonymous = start("serve", env, tmp_path / "api.log")
    worker, _ = start("worker", env, tmp_path / "worker.log")
    try:
        buyers, orders = [], []
        for email in ("one@example.com", "two@example.com"):
            buyer = Client(anonymous.port)
            assert buyer.post("/users", {"email": email, "name": "B", "password": "correct horse"}).status == 201
            assert buyer.post("/sessions", {"email": email, "password": "correct horse"}).status == 201
            placed = buyer.post("/orders", {"items": [{"product_id": 4, "quantity": 1}]})
            assert placed.status == 201
            buyers.append(buyer)
            orders.append(placed.json()["id"])
        refused = buyers[1].post("/jobs", {"kind": "order-receipt", "payload": {"order_id": orders[0]}})
        assert (refused.status, refused.error) == (404, f"payload.order_id: order {orders[0]} does not exist")
        accepted = buyers[0].post("/jobs", {"kind": "order-receipt", "payload": {"order_id": orders[0]}})
        assert accepted.status == 202, accepted.body
        state = wait_finished(buyers[0], accepted.json()["id"])
        assert state["status"] == "done", state
        assert "1 x Product 4 @ 4.00 = 4.00" in state["result"]["receipt"]
    finally:
        worker.stop()
        api.stop()
