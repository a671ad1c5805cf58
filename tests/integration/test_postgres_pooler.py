"""The kit's PgBouncer, for real: pgbouncer-userlist.sh writes the auth file and a real pgbouncer runs the
builder's pgbouncer.ini (`pgbouncer_ini`, hosts pointed at loopback) in front of a primary built by the
kit's scripts and a replica cloned from it as Patroni clones one (bench/postgres_support.py).

Debian's pgbouncer is 1.18, which predates `max_prepared_statements` (1.21): the pooler spec here sets
it to 0, which leaves the key out; the image the kit deploys (1.22) gets the default, 100.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bench.postgres_support import (
    Member,
    clone_replica,
    owned_dir,
    run_as_postgres,
    start_primary,
    wait_replayed,
    write_scripts,
)
from components.postgres import PASSWORD_KEY, RUN_AS, PoolerSpec, PostgresPasswords, PostgresSpec, pgbouncer_ini
from testsupport.process import LOOPBACK, ServerProcess, free_port, port_open, require_binary, write_secret

pytestmark = pytest.mark.integration

POOL_SIZE = 2
SPEC = PostgresSpec(
    replicas=1,
    pooler=PoolerSpec(enabled=True, default_pool_size=POOL_SIZE, reserve_pool_size=0, max_prepared_statements=0),
)
PASSWORDS = PostgresPasswords(app="pooled-app-password", replication="pooled-replication-password")


@pytest.fixture(scope="module")
def group() -> Iterator[tuple[Member, Member]]:
    scripts = write_scripts()
    primary = start_primary(SPEC, PASSWORDS, scripts)
    try:
        replica = clone_replica(primary, "postgres-1")
        primary.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        wait_replayed(primary, replica)
        yield primary, replica
        replica.close()
    finally:
        primary.close()
        shutil.rmtree(scripts)


def write_userlist(scripts: Path, folder: Path, user: str, password_file: str) -> Path:
    """pgbouncer-userlist.sh as the init container runs it: the password from the Secret's file."""
    auth_file = folder / "userlist.txt"
    env = {"POOLER_USER": user, "POOLER_PASSWORD_FILE": password_file, "AUTH_FILE": str(auth_file)}
    result = run_as_postgres([str(scripts / "pgbouncer-userlist.sh")], env)
    assert result.returncode == 0, result.stderr
    return auth_file


@pytest.fixture(scope="module")
def pooler(group: tuple[Member, Member]) -> Iterator[int]:
    binary = require_binary("pgbouncer", "Debian: apt-get install pgbouncer")
    primary, replica = group
    folder = owned_dir("kit-pgbouncer-")
    port = free_port()
    auth_file = write_userlist(primary.scripts, folder, SPEC.user, primary.secret(PASSWORD_KEY))
    ini = pgbouncer_ini(
        SPEC,
        primary=(LOOPBACK, primary.port),
        replica=(LOOPBACK, replica.port),
        listen=(LOOPBACK, port),
        auth_file=str(auth_file),
    )
    (folder / "pgbouncer.ini").write_text(ini)
    log = folder / "pgbouncer.log"
    process = ServerProcess([binary, str(folder / "pgbouncer.ini")], ready=lambda: port_open(port), log=log, uid=RUN_AS)
    yield port
    process.stop()
    shutil.rmtree(folder)


def through_pooler(port: int, database: str, password: str = PASSWORDS.app) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=LOOPBACK,
        port=port,
        dbname=database,
        user=SPEC.user,
        password=password,
        autocommit=True,
        prepare_threshold=None,
        connect_timeout=5,
    )


def test_writes_go_to_the_primary_and_ro_reads_to_the_replica(group: tuple[Member, Member], pooler: int) -> None:
    primary, replica = group
    with through_pooler(pooler, "app") as rw:
        assert rw.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        rw.execute("INSERT INTO notes VALUES (1, 'through pgbouncer')")
    wait_replayed(primary, replica)
    with through_pooler(pooler, "app_ro") as ro:
        assert ro.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        assert ro.execute("SELECT body FROM notes WHERE id = 1").fetchone() == ("through pgbouncer",)


def test_a_wrong_password_is_refused(pooler: int) -> None:
    with pytest.raises(psycopg.OperationalError, match="SASL authentication failed"):
        through_pooler(pooler, "app", password="not-the-password").close()


def test_transaction_pooling_shares_few_server_connections(group: tuple[Member, Member], pooler: int) -> None:
    primary, _ = group
    clients = [through_pooler(pooler, "app") for _ in range(8)]
    try:
        for round_ in range(3):
            for index, client in enumerate(clients):
                with client.transaction():
                    client.execute("INSERT INTO notes VALUES (%s, 'pooled')", (100 + round_ * 10 + index,))
        backends = primary.value(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        )
        assert 1 <= backends <= POOL_SIZE  # type: ignore[operator]
        assert primary.value("SELECT count(*) FROM notes WHERE body = 'pooled'") == 24
    finally:
        for client in clients:
            client.close()


def test_userlist_quotes_what_pgbouncer_needs_quoted(group: tuple[Member, Member]) -> None:
    primary, _ = group
    folder = owned_dir("kit-userlist-")
    try:
        password = write_secret(folder / "password", 'pa"ss word', RUN_AS)
        auth_file = write_userlist(primary.scripts, folder, "app", str(password))
        assert auth_file.read_text() == '"app" "pa""ss word"\n'
        assert auth_file.stat().st_mode & 0o777 == 0o600
    finally:
        shutil.rmtree(folder)
