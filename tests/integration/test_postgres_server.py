"""The kit's Postgres scripts, for real: primary-init.sh, replica-bootstrap.sh, ready.sh and promote.sh
run (from the rendered `postgres-scripts` ConfigMap) against PostgreSQL 15 servers on loopback
started with the builder's server settings. See bench/postgres_support.py for how a pod is mirrored.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bench.postgres_support import (
    Member,
    bootstrap,
    owned_dir,
    start_primary,
    start_replica,
    wait_replayed,
    write_scripts,
)
from components.postgres import RUN_AS, PostgresPasswords, PostgresSpec
from testsupport.postgres import PostgresServer
from testsupport.process import LOOPBACK, ServerProcess, free_port, real_uid

pytestmark = pytest.mark.integration

SPEC = PostgresSpec(replicas=1)
PASSWORDS = PostgresPasswords(app="app-password-1", replication="replication-password-2")
REPLICA = "postgres-replica-0"
SLOT = "postgres_replica_0"


@pytest.fixture(scope="module")
def scripts() -> Iterator[Path]:
    folder = write_scripts()
    yield folder
    shutil.rmtree(folder)


def start_pair(scripts: Path) -> tuple[Member, Member]:
    primary = start_primary(SPEC, PASSWORDS, scripts)
    try:
        replica = start_replica(primary, REPLICA)
    except BaseException:
        primary.close()
        raise
    primary.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
    return primary, replica


@pytest.fixture(scope="module")
def shared(scripts: Path) -> Iterator[tuple[Member, Member]]:
    """A primary and its replica for the tests that leave both running and streaming."""
    pair = start_pair(scripts)
    yield pair
    for member in reversed(pair):
        member.close()


@pytest.fixture
def pair(shared: tuple[Member, Member]) -> tuple[Member, Member]:
    """The shared pair, `items` emptied on both."""
    primary, replica = shared
    primary.execute("TRUNCATE items")
    wait_replayed(primary, replica)
    return shared


@pytest.fixture
def own_pair(scripts: Path) -> Iterator[tuple[Member, Member]]:
    """A primary and replica of the test's own, for tests that stop the primary or promote the replica."""
    members = start_pair(scripts)
    wait_replayed(*members)
    yield members
    for member in reversed(members):
        member.close()


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


def poll(condition: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_initialised_primary_has_the_replication_role_and_is_ready(primary: Member) -> None:
    assert primary.probe("primary").returncode == 0
    misuse = primary.run("ready.sh")
    assert misuse.returncode == 1 and "usage: ready.sh primary|replica" in misuse.stderr
    assert primary.value("SELECT rolreplication AND rolcanlogin FROM pg_roles WHERE rolname = 'replicator'") is True
    assert (primary.server.data / "pg_hba.conf").read_text().endswith("host replication replicator all scram-sha-256\n")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=primary.port, dbname="app", user="app", password="wrong").close()


def test_bootstrap_with_a_wrong_password_fails_and_leaves_no_cluster(primary: Member) -> None:
    wrong = PostgresPasswords(app=PASSWORDS.app, replication="wrong")
    clone = Member(PostgresServer(owned_dir("kit-pg-wrong-"), free_port()), SPEC, wrong, primary.scripts)
    try:
        result = bootstrap(clone, primary, REPLICA)
        assert result.returncode != 0
        assert 'password authentication failed for user "replicator"' in result.stderr
        assert not (clone.server.data / "PG_VERSION").exists()
    finally:
        clone.close()


def test_replica_streams_the_primarys_writes_through_its_own_slot(primary: Member, replica: Member) -> None:
    insert(primary, 1, 100)
    wait_replayed(primary, replica)
    assert replica.value("SELECT count(*) FROM items") == 100
    assert primary.value(f"SELECT active FROM pg_replication_slots WHERE slot_name = '{SLOT}'") is True
    assert replica.probe("replica").returncode == 0
    as_primary = replica.probe("primary")
    assert as_primary.returncode == 1 and "in recovery: not accepting writes" in as_primary.stderr
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        replica.execute("INSERT INTO items VALUES (1000, 'no')")


def test_readiness_follows_replay_lag_in_bytes_and_seconds(primary: Member, replica: Member) -> None:
    insert(primary, 1, 1)
    wait_replayed(primary, replica)
    replica.execute("SELECT pg_wal_replay_pause()")
    insert(primary, 2, 200, size=1000)  # ~250 kB of WAL that arrives but is not replayed
    lag = "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
    assert poll(lambda: int(replica.value(lag)) > 100_000)  # type: ignore[call-overload]
    behind = replica.probe("replica", max_lag_bytes=65536, max_lag_seconds=3600)
    assert behind.returncode == 1 and "> 65536" in behind.stderr and "replay lag" in behind.stderr
    assert replica.probe("replica", max_lag_bytes=10_000_000, max_lag_seconds=3600).returncode == 0
    time.sleep(2.2)  # the last replayed transaction is now over 2 s old while WAL waits
    stale = replica.probe("replica", max_lag_bytes=10_000_000, max_lag_seconds=1)
    assert stale.returncode == 1 and "s > 1" in stale.stderr
    replica.execute("SELECT pg_wal_replay_resume()")
    wait_replayed(primary, replica)
    assert replica.probe("replica", max_lag_bytes=65536, max_lag_seconds=1).returncode == 0


def test_replica_cut_off_from_the_primary_is_not_ready(own_pair: tuple[Member, Member]) -> None:
    primary, replica = own_pair
    primary.server.stop()
    assert poll(lambda: replica.probe("replica").returncode == 1)
    assert "not streaming" in replica.probe("replica").stderr


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_restarted_replica_catches_up_from_its_slot(primary: Member, replica: Member, how: str) -> None:
    replica.crash() if how == "kill" else replica.server.stop()
    insert(primary, 1, 5000)
    held = f"SELECT restart_lsn < pg_current_wal_lsn() FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
    assert primary.value(held) is True  # the slot kept the WAL the replica missed
    again = bootstrap(replica, primary, REPLICA)
    assert again.returncode == 0 and "streaming resumes from its slot" in again.stderr
    replica.server.start()
    wait_replayed(primary, replica)
    assert replica.value("SELECT count(*) FROM items") == 5000
    assert poll(lambda: replica.probe("replica").returncode == 0)


def test_a_rebuilt_replica_replaces_its_stale_slot(primary: Member, replica: Member) -> None:
    replica.server.stop()
    shutil.rmtree(replica.server.data)  # the volume is gone; the slot on the primary is not
    insert(primary, 1, 10)
    rebuilt = bootstrap(replica, primary, REPLICA)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"dropping stale slot {SLOT}" in rebuilt.stderr
    replica.server.start()
    insert(primary, 11, 10)
    wait_replayed(primary, replica)
    assert replica.value("SELECT count(*) FROM items") == 20
    assert primary.value(f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{SLOT}' AND active") == 1


def test_promotion_turns_a_replica_into_a_writable_primary(own_pair: tuple[Member, Member]) -> None:
    primary, replica = own_pair
    insert(primary, 1, 10)
    wait_replayed(primary, replica)
    primary.server.stop()  # step 1 of docs/postgres.md: the old primary is down and stays down
    promoted = replica.run("promote.sh")
    assert promoted.returncode == 0, promoted.stderr
    assert "primary: accepting writes" in promoted.stderr
    assert replica.probe("primary").returncode == 0
    assert replica.probe("replica").returncode == 0  # its pod stays in postgres-ro: it has the newest data
    insert(replica, 11, 10)
    assert replica.value("SELECT count(*) FROM items") == 20
    assert "already a primary" in replica.run("promote.sh").stderr
    # the remaining replicas are rebuilt from the new primary (their bootstrap creates their slots)
    successor = start_replica(replica, "postgres-replica-1")
    try:
        insert(replica, 21, 10)
        wait_replayed(replica, successor)
        assert successor.value("SELECT count(*) FROM items") == 30
        assert successor.probe("replica").returncode == 0
    finally:
        successor.close()


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
    assert subprocess.run(["getent", "passwd", str(RUN_AS)], check=False).returncode == 2  # no such user
    assert primary.run("ready.sh", "primary").returncode == 0  # the probe as that uid


def test_the_replica_reads_its_password_from_a_file_on_its_volume_not_its_data(replica: Member) -> None:
    """primary_conninfo names the password file the bootstrap wrote from the Secret's file (0600, as
    libpq wants it); no password is in the data directory, the command line or the environment."""
    auto_conf = (replica.server.data / "postgresql.auto.conf").read_text()
    passfile = replica.server.root / "replication.pgpass"
    assert f"passfile=''{passfile}''" in auto_conf and PASSWORDS.replication not in auto_conf
    assert passfile.read_text() == f"*:*:*:replicator:{PASSWORDS.replication}\n"
    assert passfile.stat().st_mode & 0o777 == 0o600
    assert (replica.secrets / "replication-password").stat().st_mode & 0o777 == 0o440
    _, environ = uid_and_environ(postmaster(replica))
    assert PASSWORDS.replication.encode() not in environ and PASSWORDS.app.encode() not in environ


def test_postgres_start_runs_a_cluster_directly_without_the_password_in_its_environment(
    own_pair: tuple[Member, Member],
) -> None:
    """The container command on a volume that holds a cluster: postgres itself, the *_FILE variable
    dropped; the replica it restarts streams again with its password file."""
    primary, replica = own_pair
    replica.server.stop()
    insert(primary, 1, 10)
    server = replica.server
    settings = [arg for key, value in server.settings.items() for arg in ("-c", f"{key}={value}")]
    argv = [str(replica.scripts / "postgres-start.sh"), "-c", f"port={server.port}", *settings]
    argv += ["-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={server.root}"]
    env = {**replica.env(), "POSTGRES_PASSWORD_FILE": replica.secret("password")}
    process = ServerProcess(argv, ready=server.accepting, log=server.root / "start.log", env=env, uid=RUN_AS)
    try:
        uid, environ = uid_and_environ(process.proc.pid)  # the script exec'd postgres in its place
        assert b"POSTGRES_PASSWORD" not in environ and PASSWORDS.app.encode() not in environ
        assert Path(f"/proc/{process.proc.pid}/exe").resolve().name == "postgres"
        if os.geteuid() == 0:
            assert uid == RUN_AS
        wait_replayed(primary, replica)
        assert replica.value("SELECT count(*) FROM items") == 10
    finally:
        process.stop()
