"""The kit's Postgres server, for real: its scripts (primary-init.sh, ready.sh, postgres-start.sh, run
from the rendered `postgres-scripts` ConfigMap) and its settings (`server_settings`), on PostgreSQL 15
servers on loopback. See bench/postgres_support.py for how a pod is mirrored.

A single server (phases 1-2) is initialised with primary-init.sh, so that a Patroni group can later
take over its data directory and stream it to replicas; the replicas here are cloned from it as
Patroni clones one (pg_basebackup as the replication role, through the member's slot). What Patroni
itself does (bootstrap, readiness by lag, failover, rejoin) is tests/integration/test_postgres_patroni.py's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bench.postgres_support import (
    Member,
    basebackup,
    clone_replica,
    owned_dir,
    slot_name,
    start_primary,
    wait_replayed,
    write_scripts,
)
from components.postgres import RUN_AS, PostgresPasswords, PostgresSpec, ReplicationSpec
from testsupport.postgres import PostgresServer
from testsupport.process import LOOPBACK, ServerProcess, eventually, free_port, real_uid

pytestmark = pytest.mark.integration

SPEC = PostgresSpec(replicas=1)
PASSWORDS = PostgresPasswords(app="app-password-1", replication="replication-password-2")
REPLICA = "postgres-1"  # the group's members are the StatefulSet's pods
SLOT = slot_name(REPLICA)
MB = 1024 * 1024


@pytest.fixture(scope="module")
def scripts() -> Iterator[Path]:
    folder = write_scripts()
    yield folder
    shutil.rmtree(folder)


def start_pair(spec: PostgresSpec, scripts: Path) -> tuple[Member, Member]:
    primary = start_primary(spec, PASSWORDS, scripts)
    try:
        replica = clone_replica(primary, REPLICA)
    except BaseException:
        primary.close()
        raise
    primary.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
    return primary, replica


@pytest.fixture(scope="module")
def shared(scripts: Path) -> Iterator[tuple[Member, Member]]:
    """A primary and a replica streaming from it, left running by the tests that use them."""
    pair = start_pair(SPEC, scripts)
    yield pair
    for member in reversed(pair):
        member.close()


@pytest.fixture
def pair(shared: tuple[Member, Member]) -> tuple[Member, Member]:
    """The shared pair, both running (a failed test may have left the replica stopped), `items` emptied."""
    primary, replica = shared
    if not replica.server.running:
        replica.server.start()
    primary.execute("TRUNCATE items")
    wait_replayed(primary, replica)
    return shared


@pytest.fixture
def primary(pair: tuple[Member, Member]) -> Member:
    return pair[0]


@pytest.fixture
def replica(pair: tuple[Member, Member]) -> Member:
    return pair[1]


def insert(primary: Member, first: int, count: int, size: int = 10) -> None:
    primary.execute(
        f"INSERT INTO items SELECT i, repeat('x', {size}) FROM generate_series({first}, {first + count - 1}) AS i"
    )


def slot(primary: Member, column: str) -> object:
    return primary.value(f"SELECT {column} FROM pg_replication_slots WHERE slot_name = '{SLOT}'")


def test_primary_init_creates_the_replication_role_and_its_pg_hba_entry(primary: Member) -> None:
    assert primary.value("SELECT rolreplication AND rolcanlogin FROM pg_roles WHERE rolname = 'replicator'") is True
    stored = primary.value("SELECT rolpassword FROM pg_authid WHERE rolname = 'replicator'")
    assert str(stored).startswith("SCRAM-SHA-256$")  # server_settings' password_encryption
    assert (primary.server.data / "pg_hba.conf").read_text().endswith("host replication replicator all scram-sha-256\n")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=LOOPBACK, port=primary.port, dbname="app", user="app", password="wrong").close()


def test_a_replica_clones_and_streams_as_the_replication_role_through_its_slot(
    primary: Member, replica: Member
) -> None:
    """The image's own `host all all all` entry does not cover replication: this is primary-init.sh's."""
    insert(primary, 1, 100)
    wait_replayed(primary, replica)
    assert replica.value("SELECT count(*) FROM items") == 100
    walsender = primary.value(
        "SELECT concat_ws(' ', usename, host(client_addr), state) FROM pg_stat_replication"
        f" WHERE pid = (SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{SLOT}')"
    )
    assert walsender == f"replicator {LOOPBACK} streaming"  # over TCP, as the replication role
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        replica.execute("INSERT INTO items VALUES (1000, 'no')")


def test_a_wrong_replication_password_is_refused(primary: Member) -> None:
    wrong = PostgresPasswords(app=PASSWORDS.app, replication="wrong")
    clone = Member(PostgresServer(owned_dir("kit-pg-wrong-"), free_port()), SPEC, wrong, primary.scripts)
    try:
        result = basebackup(clone, primary, "postgres-2")
        assert result.returncode != 0
        assert 'password authentication failed for user "replicator"' in result.stderr
        assert primary.value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'postgres_2'") == 0
    finally:
        clone.close()


def test_ready_means_accepting_writes(primary: Member, replica: Member) -> None:
    """ready.sh, the single server's probe: a server in recovery is not ready (a stopped one: see below)."""
    assert primary.run("ready.sh").returncode == 0
    standby = replica.run("ready.sh")
    assert standby.returncode == 1 and "in recovery: not accepting writes" in standby.stderr


def test_the_primary_keeps_wal_for_a_disconnected_replicas_slot(primary: Member, replica: Member) -> None:
    """Within `max_slot_wal_keep_mb` (256 MB) a replica that was away resumes from its slot."""
    replica.server.stop()
    assert eventually(lambda: slot(primary, "active") is False)
    insert(primary, 1, 40_000, size=1000)  # ~45 MB of WAL: beyond the small limit of the next test
    primary.execute("CHECKPOINT")  # where WAL is removed and slots beyond the limit are given up
    assert int(slot(primary, "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)")) > 32 * MB  # type: ignore[call-overload]
    assert slot(primary, "wal_status") in ("reserved", "extended")
    limit = SPEC.replication.max_slot_wal_keep_mb * MB
    assert 0 < int(slot(primary, "safe_wal_size")) < limit  # type: ignore[call-overload]
    replica.server.start()
    wait_replayed(primary, replica)
    assert replica.value("SELECT count(*) FROM items") == 40_000


def test_beyond_max_slot_wal_keep_mb_the_slot_is_given_up(scripts: Path) -> None:
    """The primary's disk does not fill for a replica that is gone: past the limit its slot is lost,
    and the replica can no longer resume from it (it must be cloned again)."""
    spec = PostgresSpec(replicas=1, replication=ReplicationSpec(max_slot_wal_keep_mb=16))
    primary, replica = start_pair(spec, scripts)
    try:
        wait_replayed(primary, replica)
        replica.server.stop()
        assert eventually(lambda: slot(primary, "active") is False)
        insert(primary, 1, 40_000, size=1000)
        primary.execute("CHECKPOINT")
        assert slot(primary, "wal_status") == "lost"
        replica.server.start()
        log = replica.server.root / "postgres.log"
        assert eventually(lambda: "has already been removed" in log.read_text(errors="replace"))
        assert replica.value("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'") == 0
    finally:
        replica.close()
        primary.close()


def uid_and_environ(pid: int) -> tuple[int, bytes]:
    """The real uid of a process and its environment block, from /proc."""
    return real_uid(pid), Path(f"/proc/{pid}/environ").read_bytes()


def postmaster(member: Member) -> int:
    return int((member.server.data / "postmaster.pid").read_text().split()[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to the pods' uid needs root")
def test_servers_and_scripts_run_as_the_pods_uid_with_no_user_entry(primary: Member, replica: Member) -> None:
    for member in (primary, replica):
        uid, _ = uid_and_environ(postmaster(member))
        assert uid == RUN_AS == 10002
        assert member.server.data.stat().st_uid == RUN_AS  # initdb and pg_basebackup ran as that uid
    assert subprocess.run(["getent", "passwd", str(RUN_AS)], check=False).returncode == 2  # no such user
    assert primary.run("ready.sh").returncode == 0  # the probe as that uid


@pytest.fixture
def own_primary(scripts: Path) -> Iterator[Member]:
    """A primary of the test's own, for tests that stop it."""
    member = start_primary(SPEC, PASSWORDS, scripts)
    yield member
    member.close()


def test_postgres_start_runs_a_cluster_directly_without_the_password_in_its_environment(own_primary: Member) -> None:
    """The container command on a volume that holds a cluster (a restart): postgres itself, the *_FILE
    variable dropped; the server is the one stopped, with its data, and ready again."""
    primary = own_primary
    primary.execute("CREATE TABLE kept AS SELECT generate_series(1, 10) AS id")
    primary.server.stop()
    assert primary.run("ready.sh").returncode != 0  # a stopped server is not ready
    server = primary.server
    settings = [arg for key, value in server.settings.items() for arg in ("-c", f"{key}={value}")]
    argv = [str(primary.scripts / "postgres-start.sh"), "-c", f"port={server.port}", *settings]
    argv += ["-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={server.root}"]
    env = {**primary.env(), "POSTGRES_PASSWORD_FILE": primary.secret("password")}
    process = ServerProcess(argv, ready=server.accepting, log=server.root / "start.log", env=env, uid=RUN_AS)
    try:
        uid, environ = uid_and_environ(process.proc.pid)  # the script exec'd postgres in its place
        assert b"POSTGRES_PASSWORD" not in environ and PASSWORDS.app.encode() not in environ
        assert Path(f"/proc/{process.proc.pid}/exe").resolve().name == "postgres"
        if os.geteuid() == 0:
            assert uid == RUN_AS
        assert primary.run("ready.sh").returncode == 0
        assert primary.value("SELECT count(*) FROM kept") == 10
    finally:
        process.stop()
