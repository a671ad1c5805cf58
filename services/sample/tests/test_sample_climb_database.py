"""1 -> 2 in place: `sample climb copy-database` between two real PostgreSQL 15 servers on loopback.

The source plays phase 1's in-pod database (the service runs on it), the target phase 2's StatefulSet
(empty, `sample migrate`d). The command runs as the Job would: `python -m sample climb copy-database`
with the target's env, CLIMB_SOURCE_DATABASE_URL and DATABASE_PASSWORD_FILE.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from climb_helpers import OrderWriter, climb, kill_at, report, steps
from sample.migrations import migrate
from sample_helpers import Service

from testsupport.postgres import PostgresServer
from testsupport.process import free_port

pytestmark = pytest.mark.integration

TABLES = ("products", "users", "orders", "order_items")
ALLOWED = (
    "allowed: the old rung's DSN postgresql://user@host:port/db, without a password"
    " (DATABASE_PASSWORD_FILE's goes into it), naming another database than DATABASE_URL"
)
_databases = itertools.count()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """Phase 1's database server and phase 2's."""
    source = PostgresServer.primary()
    try:
        target = PostgresServer.primary()
    except BaseException:
        source.close()
        raise
    yield source, target
    target.close()
    source.close()


@dataclass
class Rungs:
    source: PostgresServer
    target: PostgresServer
    database: str
    env: dict[str, str]
    """The Job's env: the target as DATABASE_URL, the source as CLIMB_SOURCE_DATABASE_URL, one password file."""

    @property
    def service_env(self) -> dict[str, str]:
        """Phase 1's web pod: the source, with the same password file."""
        return {"DATABASE_URL": self.env["CLIMB_SOURCE_DATABASE_URL"], "DATABASE_PASSWORD_FILE": self.password_file}

    @property
    def password_file(self) -> str:
        return self.env["DATABASE_PASSWORD_FILE"]

    def source_sql(self, statement: str) -> str:
        return self.source.sql(statement, self.database)

    def target_sql(self, statement: str) -> str:
        return self.target.sql(statement, self.database)

    def rows(self, server: PostgresServer) -> dict[str, list[str]]:
        return {t: server.sql(f"SELECT x::text FROM {t} x ORDER BY 1", self.database).splitlines() for t in TABLES}

    def same(self) -> dict[str, list[str]]:
        """Every table's rows, equal on both sides; returns them."""
        source, target = self.rows(self.source), self.rows(self.target)
        for table in TABLES:
            assert source[table] == target[table], table
        return source


@pytest.fixture
def rungs(servers: tuple[PostgresServer, PostgresServer], tmp_path: Path) -> Rungs:
    """A fresh database on both servers, migrated; the source holds products, 30 users and their orders."""
    source, target = servers
    database = f"climb{next(_databases)}"
    password = tmp_path / "password"
    password.write_text("shared-secret\n")  # trust auth on loopback: the password is carried, not checked
    for server in servers:
        server.create_database(database)
        asyncio.run(migrate(server.dsn(database)))  # what `sample migrate` does, without a process start
    env = {
        "DATABASE_URL": target.dsn(database),
        "CLIMB_SOURCE_DATABASE_URL": source.dsn(database),
        "DATABASE_PASSWORD_FILE": str(password),
    }
    rungs = Rungs(source, target, database, env)
    rungs.source_sql(
        "INSERT INTO products (sku, name, price_cents, stock)"
        " SELECT 'sku-' || g, 'Product ' || g, 100 * g, 100000 FROM generate_series(1, 5) g;"
        "INSERT INTO users (email, name, password_hash)"
        " SELECT 'u' || g || '@example.com', 'User ' || g, 'hash' FROM generate_series(1, 30) g;"
        "INSERT INTO orders (user_id, total_cents) SELECT 1 + g % 30, 100 FROM generate_series(1, 90) g;"
        "INSERT INTO order_items (order_id, product_id, quantity, price_cents)"
        " SELECT id, 1 + id % 5, 1, 100 FROM orders"
    )
    return rungs


def source_writable(rungs: Rungs) -> bool:
    """Whether a new session can write to the source."""
    try:
        rungs.source_sql("UPDATE products SET stock = stock WHERE id = 1")
    except RuntimeError as exc:
        assert (
            "ERROR:  products is read-only: the database is being copied to the next rung"
            " (sample climb copy-database), retry shortly"
        ) in str(exc), exc
        return False
    return True


def test_copy_under_writes_loses_nothing_and_the_target_serves(rungs: Rungs) -> None:
    service = Service(rungs.service_env)
    try:
        client = service.client()
        users = []
        for n in range(4):
            created = client.post("/users", {"email": f"w{n}@example.com", "name": "W", "password": "password1"})
            assert created.status == 201, created.body
            users.append(created.json()["id"])
        writer = OrderWriter(service.client(), users)
        try:
            writer.wait_for("acknowledged", 20)
            done = climb(rungs.env, "copy-database")
            writer.wait_for("refused", 3)  # the source is frozen: the service answers 503, Retry-After 1
        finally:
            writer.stop()
        copied = report(done)
        print(f"\ncopy-database report: {json.dumps(copied)}")
        print(f"orders during the copy: {len(writer.acknowledged)} acknowledged, {len(writer.refused)} refused (503)")
        assert steps(done.stderr) == ["freeze", "copy", "verify", "record"]
        assert writer.unexpected == [] and set(writer.refused) == {"1"}
        assert client.get("/products/1").status == 200  # reads still work on the frozen source
        assert client.get(f"/users/{users[0]}").status == 200
    finally:
        service.stop()
        assert "unhandled error" not in service.output(), service.output()  # every refusal was a 503

    rows = rungs.same()
    stored = [int(line.split(",")[0].lstrip("(")) for line in rows["orders"]]
    assert len(stored) == len(set(stored)) == 90 + len(writer.acknowledged)  # the 90 seeded and every 201
    assert set(writer.acknowledged) <= set(stored)
    for table in TABLES:
        assert copied["tables"][table]["rows"] == copied["tables"][table]["copied"] == len(rows[table])
        key = "t.order_id, t.product_id" if table == "order_items" else "t.id"
        md5 = rungs.target_sql(f"SELECT md5(string_agg(md5(t::text), '' ORDER BY {key})) FROM {table} t")
        assert copied["tables"][table]["md5"] == md5
    assert copied["frozen_ms"] > 0 and copied["source"] == "frozen until the web tier switches to the target"
    assert not source_writable(rungs)  # stays frozen: the web tier switches next

    # phase 2's service on the target: the sequences continue after the copied ids
    target = Service({"DATABASE_URL": rungs.env["DATABASE_URL"], "DATABASE_PASSWORD_FILE": rungs.password_file})
    try:
        client = target.client()
        created = client.post("/users", {"email": "after@example.com", "name": "A", "password": "password1"})
        assert created.status == 201 and created.json()["id"] == 31 + len(users)
        placed = client.post("/orders", {"user_id": users[0], "items": [{"product_id": 2, "quantity": 1}]})
        assert placed.status == 201 and placed.json()["id"] == max(stored) + 1
    finally:
        target.stop()

    again = report(climb(rungs.env, "copy-database"))  # after success: only re-verifies the frozen source
    assert again["already_done"] is True and again["tables"] == copied["tables"]
    assert again["reverified"] == "yes: the source still matches the recorded checksums"
    gone = {**rungs.env, "CLIMB_SOURCE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/gone"}
    late = report(climb(gone, "copy-database"))  # the phase-1 pod was deleted: the record is the answer
    assert late["already_done"] is True and late["tables"] == copied["tables"]
    assert late["reverified"].startswith("no: the source is unreachable (")


@pytest.mark.parametrize("step", ["freeze", "copy", "verify", "record"])
def test_a_run_killed_at_any_step_completes_when_run_again(rungs: Rungs, step: str) -> None:
    seen = kill_at(rungs.env, step, "copy-database")
    assert seen[-1] == step
    finished = climb(rungs.env, "copy-database")
    copied = report(finished)
    if not copied.get("already_done"):
        assert steps(finished.stderr) == ["freeze", "copy", "verify", "record"]
    rows = rungs.same()
    assert [len(rows[t]) for t in TABLES] == [5, 30, 90, 90]
    assert copied["tables"]["orders"]["rows"] == 90
    assert not source_writable(rungs)
    assert report(climb(rungs.env, "copy-database"))["already_done"] is True


def test_a_tampered_copy_fails_verification_and_the_source_serves_again(rungs: Rungs) -> None:
    """A trigger on the target changes one user as it is copied: verification must catch it."""
    rungs.target_sql(
        "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN IF NEW.id = 7 THEN NEW.name := 'changed'; END IF; RETURN NEW; END$$;"
        "CREATE TRIGGER tamper BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION tamper()"
    )
    service = Service(rungs.service_env)
    try:
        client = service.client()
        failed = climb(rungs.env, "copy-database")
        assert failed.returncode == 1 and failed.stdout == ""
        source_sum = rungs.source_sql("SELECT md5(string_agg(md5(t::text), '' ORDER BY t.id)) FROM users t")
        target_sum = rungs.target_sql("SELECT md5(string_agg(md5(t::text), '' ORDER BY t.id)) FROM users t")
        assert failed.stderr.splitlines()[-1] == (
            f"sample climb copy-database: verify: table users: source has 30 rows (md5 {source_sum}),"
            f" target 30 rows (md5 {target_sum}); the source takes writes again, the climb did not happen"
        )
        assert source_writable(rungs)
        # the running service writes again (its first attempt may meet a connection the freeze ended)
        statuses = []
        for _ in range(5):
            created = client.post("/users", {"email": "back@example.com", "name": "B", "password": "password1"})
            statuses.append(created.status)
            if created.status == 201:
                break
        assert statuses[-1] == 201 and set(statuses[:-1]) <= {503}, statuses
    finally:
        service.stop()
    assert rungs.target_sql("SELECT count(*) FROM climb_copy") == "0"


def test_a_row_that_cannot_be_copied_fails_and_unfreezes(rungs: Rungs) -> None:
    rungs.target_sql("ALTER TABLE products ADD CONSTRAINT dearer CHECK (price_cents > 100)")
    failed = climb(rungs.env, "copy-database")
    assert failed.returncode == 1
    last = failed.stderr.splitlines()[-1]
    assert last == (
        "sample climb copy-database: copy: table products: the target refused a row:"
        ' new row for relation "products" violates check constraint "dearer";'
        " the source takes writes again, the climb did not happen"
    )
    assert source_writable(rungs)
    assert rungs.target_sql("SELECT count(*) FROM products") == "0"  # the copy's transaction rolled back


def test_unfreeze_gives_the_source_back_and_a_later_copy_starts_over(rungs: Rungs) -> None:
    report(climb(rungs.env, "copy-database"))
    assert not source_writable(rungs)
    unfrozen = report(climb(rungs.env, "copy-database", "--unfreeze"))
    assert unfrozen == {"action": "copy-database", "unfrozen": True, "target_record": "cleared"}
    assert source_writable(rungs)
    rungs.source_sql("INSERT INTO users (email, name, password_hash) VALUES ('late@example.com', 'L', 'h')")
    again = report(climb(rungs.env, "copy-database"))
    assert "already_done" not in again and again["tables"]["users"]["rows"] == 31
    rungs.same()


def test_config_errors_name_the_variable_the_value_and_what_is_allowed(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("pw\n")
    target = "postgresql://app@db-rw:5432/app"
    missing = climb({"DATABASE_URL": target}, "copy-database")
    assert missing.returncode == 2
    assert missing.stderr == (
        f"sample climb copy-database: invalid environment:\n  CLIMB_SOURCE_DATABASE_URL: not set, {ALLOWED}\n"
    )
    wrong = climb({"DATABASE_URL": target, "CLIMB_SOURCE_DATABASE_URL": "mysql://old:3306/app"}, "copy-database")
    assert wrong.returncode == 2
    assert (
        wrong.stderr == "sample climb copy-database: invalid environment:\n"
        f"  CLIMB_SOURCE_DATABASE_URL: got 'mysql://old:3306/app', {ALLOWED}\n"
    )
    env = {
        "DATABASE_URL": target,
        "DATABASE_PASSWORD_FILE": str(password),
        "CLIMB_SOURCE_DATABASE_URL": "postgresql://app:secret@web:5432/app",
    }
    with_password = climb(env, "copy-database")
    assert with_password.returncode == 2
    assert with_password.stderr == (
        "sample climb copy-database: invalid environment:\n"
        "  CLIMB_SOURCE_DATABASE_URL: got 'postgresql://app:***@web:5432/app', allowed: a URL without a password"
        " while DATABASE_PASSWORD_FILE is set (one or the other)\n"
    )
    same = climb({"DATABASE_URL": target, "CLIMB_SOURCE_DATABASE_URL": target}, "copy-database")
    assert same.stderr == (
        "sample climb copy-database: invalid environment:\n"
        f"  CLIMB_SOURCE_DATABASE_URL: got '{target}', {ALLOWED} (it is DATABASE_URL)\n"
    )
