"""4 -> 5 in place: `sample climb adopt-shards` against real PostgreSQL 15 servers on loopback (main + 2 groups).

Phase 4 is the service unsharded on the main group; the climb runs phase 5's `sample migrate` (with
SHARD_GROUPS), then `python -m sample climb adopt-shards` with the same env, as the Jobs would; phase 5
is the service with the shard env afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from climb_helpers import OrderWriter, climb, kill_at, report, steps
from sample import climb_shards
from sample.climb_database import freeze_tables
from sample.migrations import GROUP_SHARDING, MAIN_SHARDING, migrate
from sample.shards import ShardMap, logical_shard, seed_map
from sample_helpers import Service, run_sample

from testsupport.postgres import PostgresServer

pytestmark = pytest.mark.integration

GROUPS = ("pg-shard-0", "pg-shard-1")
LOGICAL = 64
MAP = ShardMap(1, LOGICAL, GROUPS, tuple(GROUPS[i % 2] for i in range(LOGICAL)))
STEPS = ["prepare", "copy", "freeze", "catch-up", "directory", "verify", "record"]
FROZEN = (
    "is read-only: users and orders move to the shard groups (sample climb adopt-shards),"
    " writes resume when the web tier runs sharded, retry shortly"
)
ORDER_COLUMNS = "id, user_id, status, total_cents, created_at"
_databases = itertools.count()


@pytest.fixture(scope="module")
def servers() -> Iterator[list[PostgresServer]]:
    """The main group's server, then one per shard group."""
    started: list[PostgresServer] = []
    try:
        for _ in range(1 + len(GROUPS)):
            started.append(PostgresServer.primary())
        yield started
    finally:
        for server in started:
            server.close()


@dataclass
class Ladder:
    main: PostgresServer
    groups: dict[str, PostgresServer]
    database: str
    env: dict[str, str]
    """Phase 5's migration Job env (main + groups + map)."""

    def main_sql(self, statement: str) -> str:
        return self.main.sql(statement, self.database)

    def group_sql(self, group: str, statement: str) -> str:
        return self.groups[group].sql(statement, self.database)

    def migrate_sharded(self) -> None:
        """What phase 5's `sample migrate` does (in-process; the writer test runs the real command)."""

        async def run() -> None:
            await migrate(self.env["DATABASE_URL"], MAIN_SHARDING)
            conn = await asyncpg.connect(self.env["DATABASE_URL"])
            try:
                await seed_map(conn, MAP, GROUPS)
            finally:
                await conn.close()
            for i in range(len(GROUPS)):
                await migrate(self.env[f"SHARD_{i}_URL"], GROUP_SHARDING)

        asyncio.run(run())

    def main_writable(self) -> bool:
        try:
            self.main_sql("UPDATE users SET name = name WHERE false")
        except RuntimeError as exc:
            assert f"ERROR:  users {FROZEN}" in str(exc), exc
            return False
        return True

    def placed(self) -> dict[str, dict[str, set[str]]]:
        """Every adopted row where it belongs and nowhere else: per group, the expected row texts (from main,
        order ids renumbered in Python) equal the group's; returns them."""
        users = self.main_sql("SELECT id, t::text FROM users t").splitlines()
        orders = self.main_sql(f"SELECT {ORDER_COLUMNS} FROM orders").splitlines()
        items = self.main_sql(
            "SELECT i.order_id, o.user_id, i.product_id, i.quantity, i.price_cents"
            " FROM order_items i JOIN orders o ON o.id = i.order_id"
        ).splitlines()
        expected: dict[str, dict[str, set[str]]] = {
            g: {"users": set(), "orders": set(), "items": set()} for g in GROUPS
        }
        for line in users:
            user, text = line.split("|", 1)
            expected[MAP.group_of(logical_shard(int(user), LOGICAL))]["users"].add(text)
        for line in orders:
            old, user, *rest = line.split("|")
            logical = logical_shard(int(user), LOGICAL)
            expected[MAP.group_of(logical)]["orders"].add("|".join([str(int(old) * 1024 + logical), user, *rest]))
        for line in items:
            old, user, *rest = line.split("|")
            logical = logical_shard(int(user), LOGICAL)
            expected[MAP.group_of(logical)]["items"].add("|".join([str(int(old) * 1024 + logical), *rest]))
        for group in GROUPS:
            found = {
                "users": set(self.group_sql(group, "SELECT t::text FROM users t").splitlines()),
                "orders": set(
                    self.group_sql(
                        group, "SELECT id, user_id, status, total_cents, created_at FROM orders"
                    ).splitlines()
                ),
                "items": set(
                    self.group_sql(
                        group, "SELECT order_id, product_id, quantity, price_cents FROM order_items"
                    ).splitlines()
                ),
            }
            assert found == expected[group], group
        assert all(expected[g]["users"] for g in GROUPS)  # both groups got users
        return expected


@pytest.fixture
def ladder(servers: list[PostgresServer]) -> Ladder:
    """Phase 4's main group (unsharded schema) with products, 40 users, 120 orders and items; empty groups."""
    database = f"adopt{next(_databases)}"
    for server in servers:
        server.create_database(database)
    main, groups = servers[0], dict(zip(GROUPS, servers[1:], strict=True))
    asyncio.run(migrate(main.dsn(database)))
    env = {
        "DATABASE_URL": main.dsn(database),
        "SHARD_GROUPS": ",".join(GROUPS),
        "SHARD_MAP": json.dumps(MAP.to_dict()),
        "SHARD_MAP_REFRESH_SECONDS": "0.2",
        **{f"SHARD_{i}_URL": server.dsn(database) for i, server in enumerate(servers[1:])},
    }
    ladder = Ladder(main, groups, database, env)
    ladder.main_sql(
        "INSERT INTO products (sku, name, price_cents, stock)"
        " SELECT 'sku-' || g, 'Product ' || g, 100 * g, 100000 FROM generate_series(1, 5) g;"
        "INSERT INTO users (email, name, password_hash)"
        " SELECT 'User' || g || '@Example.com', 'User ' || g, 'hash' || g FROM generate_series(1, 40) g;"
        "INSERT INTO orders (user_id, total_cents) SELECT 1 + g % 40, 100 * g FROM generate_series(1, 120) g;"
        "INSERT INTO order_items (order_id, product_id, quantity, price_cents)"
        " SELECT id, 1 + id % 5, 1 + id % 3, 100 FROM orders;"
        "INSERT INTO order_items (order_id, product_id, quantity, price_cents)"
        " SELECT id, 1 + (id + 1) % 5, 2, 200 FROM orders WHERE id % 4 = 0"
    )
    return ladder


def test_adopting_under_writes_places_every_row_once_and_the_sharded_tier_serves(ladder: Ladder) -> None:
    phase4 = Service({"DATABASE_URL": ladder.env["DATABASE_URL"]})
    try:
        client = phase4.client()
        users = []
        for n in range(6):
            created = client.post("/users", {"email": f"w{n}@example.com", "name": "W", "password": "password1"})
            assert created.status == 201, created.body
            users.append(created.json()["id"])
        writer = OrderWriter(phase4.client(), users)
        try:
            migrated = run_sample("migrate", ladder.env)  # phase 5's migration Job, while phase 4 writes
            assert migrated.returncode == 0, migrated.stderr
            writer.wait_for("acknowledged", 20)
            done = climb(ladder.env, "adopt-shards")
            assert done.returncode == 0, done.stderr
            assert writer.unexpected == []
            writer.wait_for("refused", 3)  # main's orders are frozen: 503 with Retry-After 1
        finally:
            writer.stop()
        adopted = report(done)
        print(f"\nadopt-shards report: {json.dumps(adopted)}")
        print(f"orders during the adoption: {len(writer.acknowledged)} acknowledged, {len(writer.refused)} refused")
        assert steps(done.stderr) == STEPS
        assert writer.unexpected == [] and set(writer.refused) == {"1"}
        assert client.get(f"/users/{users[0]}").status == 200  # phase 4 still reads
    finally:
        phase4.stop()
        assert "unhandled error" not in phase4.output(), phase4.output()

    placed = ladder.placed()
    stored = {int(line.split("|")[0]) for g in GROUPS for line in placed[g]["orders"]}
    assert len(stored) == sum(len(placed[g]["orders"]) for g in GROUPS) == 120 + len(writer.acknowledged)
    owners = dict(
        tuple(map(int, line.split("|"))) for line in ladder.main_sql("SELECT id, user_id FROM orders").splitlines()
    )
    in_group = {g: ladder.group_sql(g, "SELECT id FROM orders").splitlines() for g in GROUPS}
    for old in writer.acknowledged:  # every acknowledged order, exactly once, in its user's group
        logical = logical_shard(owners[old], LOGICAL)
        for group in GROUPS:
            expected = 1 if group == MAP.group_of(logical) else 0
            assert in_group[group].count(str(old * 1024 + logical)) == expected, (old, group)
    for group in GROUPS:
        for table, rows in (("users", "users"), ("orders", "orders"), ("order_items", "items")):
            assert adopted["verified"][group][table]["rows"] == len(placed[group][rows])
            assert adopted["copied"][group][table] + adopted["caught_up"][group][table] >= 0
    assert adopted["frozen_ms"] > 0 and adopted["directory_added"] == 46
    assert not ladder.main_writable()

    phase5 = Service(ladder.env)
    try:
        client = phase5.client()
        old_user, old_order = users[0], writer.acknowledged[0]
        assert client.get(f"/users/{old_user}").json()["id"] == old_user
        new_id = old_order * 1024 + logical_shard(old_user, LOGICAL)
        assert client.get(f"/orders/{new_id}").json()["user_id"] == old_user
        taken = client.post("/users", {"email": "W0@example.com", "name": "X", "password": "password1"})
        assert taken.status == 409  # the directory knows the adopted emails
        created = client.post("/users", {"email": "new@example.com", "name": "N", "password": "password1"})
        assert created.status == 201 and created.json()["id"] > 46  # after every adopted user
        placed_now = client.post("/orders", {"user_id": old_user, "items": [{"product_id": 1, "quantity": 1}]})
        assert placed_now.status == 201 and placed_now.json()["id"] // 1024 > max(stored) // 1024
    finally:
        phase5.stop()
        assert "unhandled error" not in phase5.output(), phase5.output()

    finished = report(climb(ladder.env, "adopt-shards", "--finish"))
    assert finished["removed_from_main"] == {
        "users": 46,
        "orders": 120 + len(writer.acknowledged),
        "order_items": 150 + len(writer.acknowledged),
    }
    assert ladder.main_sql("SELECT count(*) FROM users") == "0"
    assert not ladder.main_writable()  # a stray phase-4 pod still gets 503, not a lost write
    again = report(climb(ladder.env, "adopt-shards"))
    assert again["already_done"] is True and again["state"] == "finished"


SINCE_THE_SNAPSHOT = (  # main's writes between the copy and the freeze, each a row catch-up must find
    "INSERT INTO users (email, name, password_hash) VALUES ('late@example.com', 'Late', 'h');"
    "INSERT INTO orders (user_id, total_cents)"
    " SELECT id, 7 FROM users WHERE email IN ('late@example.com', 'User2@Example.com');"
    "INSERT INTO order_items (order_id, product_id, quantity, price_cents)"
    " SELECT id, 3, 1, 7 FROM orders WHERE total_cents = 7;"
    "UPDATE users SET name = 'Renamed' WHERE id = 3;"
    "UPDATE orders SET status = 'shipped' WHERE id = 5;"
    "UPDATE order_items SET quantity = 9 WHERE order_id = 6;"  # its only item
    "DELETE FROM order_items WHERE order_id = 8 AND product_id = 5;"  # one of its two items
    "DELETE FROM orders WHERE id = 10"  # and its item (ON DELETE CASCADE)
)


def test_catch_up_finds_every_row_added_changed_or_removed_since_the_snapshot(
    ladder: Ladder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ladder.migrate_sharded()

    async def write_then_freeze(conn: asyncpg.Connection, names: list[str], reason: str) -> None:
        await conn.execute(SINCE_THE_SNAPSHOT)  # main still takes writes: the copy has been made
        await freeze_tables(conn, names, reason)

    monkeypatch.setattr(climb_shards, "freeze_tables", write_then_freeze)
    groups = {group: ladder.env[f"SHARD_{i}_URL"] for i, group in enumerate(GROUPS)}
    adopted = asyncio.run(climb_shards.adopt(ladder.env["DATABASE_URL"], groups))

    def total(part: str, table: str) -> int:
        return sum(adopted[part][g][table] if part != "verified" else adopted[part][g][table]["rows"] for g in GROUPS)

    assert {t: total("copied", t) for t in ("users", "orders", "order_items")} == {
        "users": 40,
        "orders": 120,
        "order_items": 150,
    }
    assert {t: total("caught_up", t) for t in ("users", "orders", "order_items")} == {
        "users": 2,  # 1 added, 1 changed
        "orders": 4,  # 2 added, 1 changed, 1 removed
        "order_items": 5,  # 2 added, 1 changed, 2 removed
    }
    assert {t: total("verified", t) for t in ("users", "orders", "order_items")} == {
        "users": 41,
        "orders": 121,
        "order_items": 150,
    }
    placed = ladder.placed()  # every group's rows are exactly main's rows for it
    assert any(",Renamed," in row for g in GROUPS for row in placed[g]["users"])
    assert not ladder.main_writable()


@pytest.mark.parametrize("step", STEPS)
def test_a_run_killed_at_any_step_completes_when_run_again(ladder: Ladder, step: str) -> None:
    ladder.migrate_sharded()
    assert kill_at(ladder.env, step, "adopt-shards")[-1] == step
    finished = climb(ladder.env, "adopt-shards")
    adopted = report(finished)
    if not adopted.get("already_done"):
        assert steps(finished.stderr) == STEPS
    placed = ladder.placed()
    assert sum(len(placed[g]["orders"]) for g in GROUPS) == 120
    assert sum(adopted["verified"][g]["order_items"]["rows"] for g in GROUPS) == 150
    assert ladder.main_sql("SELECT count(*) FROM user_directory") == "40"
    assert int(ladder.main_sql("SELECT last_value FROM order_ids")) >= 120
    assert not ladder.main_writable()
    assert report(climb(ladder.env, "adopt-shards"))["already_done"] is True


def test_a_tampered_copy_fails_verification_and_main_takes_writes_again(ladder: Ladder) -> None:
    ladder.migrate_sharded()
    group = GROUPS[0]
    victim = next(u for u in range(1, 41) if MAP.group_of(logical_shard(u, LOGICAL)) == group)
    ladder.group_sql(
        group,
        "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS"
        f" $$BEGIN IF NEW.id = {victim} THEN NEW.name := 'changed'; END IF; RETURN NEW; END$$;"
        "CREATE TRIGGER tamper BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION tamper()",
    )
    failed = climb(ladder.env, "adopt-shards")
    assert failed.returncode == 1 and failed.stdout == ""
    count = sum(MAP.group_of(logical_shard(u, LOGICAL)) == group for u in range(1, 41))
    assert re.fullmatch(
        f"sample climb adopt-shards: verify: {group} users: main's rows for it are {count} \\(md5 [0-9a-f]{{32}}\\),"
        f" the group has {count} \\(md5 [0-9a-f]{{32}}\\); main's users and orders take writes again,"
        " nothing was switched",
        failed.stderr.splitlines()[-1],
    ), failed.stderr
    assert steps(failed.stderr) == STEPS[:-1]
    assert ladder.main_writable()
    assert ladder.main_sql("SELECT count(*) FROM climb_adopt") == "0"


def test_unfreeze_abandons_the_climb_and_a_later_run_starts_over(ladder: Ladder) -> None:
    ladder.migrate_sharded()
    report(climb(ladder.env, "adopt-shards"))
    assert report(climb(ladder.env, "adopt-shards", "--unfreeze"))["unfrozen"] == ["order_items", "orders", "users"]
    assert ladder.main_writable()
    ladder.main_sql("INSERT INTO users (email, name, password_hash) VALUES ('late@example.com', 'L', 'h')")
    again = report(climb(ladder.env, "adopt-shards"))
    assert "already_done" not in again
    assert sum(again["verified"][g]["users"]["rows"] for g in GROUPS) == 41
    ladder.placed()


def test_errors_name_what_is_wrong_and_what_is_allowed(ladder: Ladder) -> None:
    unsharded = climb({"DATABASE_URL": ladder.env["DATABASE_URL"]}, "adopt-shards")
    assert unsharded.returncode == 2
    assert unsharded.stderr == (
        "sample climb adopt-shards: SHARD_GROUPS: not set, allowed: the shard groups' names (comma-separated)\n"
    )
    lacking = {k: v for k, v in ladder.env.items() if k != "SHARD_1_URL"}
    incomplete = climb(lacking, "adopt-shards")
    assert incomplete.returncode == 2
    assert incomplete.stderr == (
        "sample climb: invalid environment:\n"
        "  SHARD_1_URL: got '', allowed: a DSN postgresql://user:pass@host:port/db (group pg-shard-1)\n"
    )
    early = climb(ladder.env, "adopt-shards")  # phase 5's `sample migrate` has not run
    assert early.returncode == 1
    assert early.stderr.splitlines()[-1] == (
        "sample climb adopt-shards: no shard map in the main group: run `sample migrate` with SHARD_GROUPS first"
    )
    ladder.migrate_sharded()
    ladder.group_sql(GROUPS[1], "INSERT INTO users (id, email, name, password_hash) VALUES (9001, 'n@x', 'N', 'h')")
    switched = climb(ladder.env, "adopt-shards")  # the sharded tier wrote already: nothing is touched
    assert switched.returncode == 1
    assert switched.stderr.splitlines()[-1] == (
        "sample climb adopt-shards: pg-shard-1 holds 1 users or orders of users main does not have:"
        " has the web tier switched to sharded mode already? Nothing was changed"
    )
    assert ladder.group_sql(GROUPS[1], "SELECT count(*) FROM users") == "1" and ladder.main_writable()
    ladder.group_sql(GROUPS[1], "DELETE FROM users")
    premature = climb(ladder.env, "adopt-shards", "--finish")
    assert premature.returncode == 1
    assert premature.stderr.splitlines()[-1] == (
        "sample climb adopt-shards: --finish: the adoption is not recorded as done:"
        " run `sample climb adopt-shards` first"
    )
    assert ladder.main_sql("SELECT count(*) FROM users") == "40"
