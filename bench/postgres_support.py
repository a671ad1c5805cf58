"""The kit's Postgres group on loopback, built the way the pods build it, by the kit's own files.

Shared by tests/integration/test_postgres_*.py and bench/postgres_replica_lag.py.

- The scripts are the `postgres-scripts` ConfigMap's data (`scripts_config_map`), written to a
  folder with the ConfigMap's mode, and run as the pods' uid and gid (10002, no user entry).
- The credentials are files, as the pods' projected volume holds them: `<member>/secrets/
  postgres-credentials/<key>`, owned by root and the pods' group, mode 0440; scripts get their paths.
- Every server runs with the builder's `server_settings(spec)` (plus testsupport's fast settings
  unless overridden), in the foreground (testsupport's `PostgresServer`).
- A primary is initialised as the official image's entrypoint does it: initdb with the app role
  as bootstrap superuser and its password, the database created, `local` trust and password
  (SCRAM) for every TCP connection, then primary-init.sh as the initdb hook. The image's extra
  `trust` entries for 127.0.0.1 are left out: pods connect from other addresses, so here too
  replication must go through the entry primary-init.sh adds.
- A replica is replica-bootstrap.sh (pg_basebackup through its slot) followed by `postgres`.

Scripts reach their own server the way probes do in the pod: PGHOST is the socket directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from components.labels import Meta
from components.postgres import (
    MAIN,
    PASSWORD_KEY,
    REPLICATION_PASSWORD_KEY,
    REPLICATION_USER,
    RUN_AS,
    PostgresPasswords,
    PostgresSpec,
    scripts_config_map,
    server_settings,
)
from testsupport.postgres import PostgresServer, postgres_binary, user_name_env
from testsupport.postgres import owned_tempdir as owned_dir
from testsupport.process import LOOPBACK, as_uid, free_port, write_secret

HBA = "local all all trust\nhost all all all scram-sha-256\n"


def write_scripts() -> Path:
    """A new folder holding the `postgres-scripts` ConfigMap's files as the pod's volume does (mode 0555)."""
    data = scripts_config_map(Meta(namespace="loopback", instance="test", version="0"))["data"]
    folder = Path(tempfile.mkdtemp(prefix="kit-pg-scripts-"))
    folder.chmod(0o755)
    for name, text in data.items():
        path = folder / name
        path.write_text(text)
        path.chmod(0o555)
    return folder


class Member:
    """One server of the group, with the scripts and credentials its pod would have."""

    def __init__(self, server: PostgresServer, spec: PostgresSpec, passwords: PostgresPasswords, scripts: Path) -> None:
        self.server = server
        self.spec = spec
        self.passwords = passwords
        self.scripts = scripts
        folder = server.root / "secrets" / MAIN.secret
        folder.mkdir(parents=True, exist_ok=True)
        for key, value in ((PASSWORD_KEY, passwords.app), (REPLICATION_PASSWORD_KEY, passwords.replication)):
            write_secret(folder / key, value, RUN_AS)
        self.secrets = folder

    def secret(self, key: str) -> str:
        """The path of the credentials Secret's `key`, as the pod's volume mounts it."""
        return str(self.secrets / key)

    @property
    def port(self) -> int:
        return self.server.port

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The pod's libpq and data-directory variables, pointing at this server."""
        bin_dir = str(Path(postgres_binary("postgres")).parent)
        return {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PGDATA": str(self.server.data),
            "PGHOST": str(self.server.root),
            "PGPORT": str(self.port),
            "PGUSER": self.spec.user,
            "PGDATABASE": self.spec.database,
            **(extra or {}),
        }

    def run(self, script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run one of the kit's scripts as the pod would (its uid and gid); never raises on failure."""
        return run_as_postgres([str(self.scripts / script), *args], self.env(env))

    def probe(
        self, role: str, max_lag_bytes: int | None = None, max_lag_seconds: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The readiness probe: ready.sh `role` with the spec's lag limits (or the ones given)."""
        limits = self.spec.replication
        env = {
            "MAX_LAG_BYTES": str(limits.max_lag_bytes if max_lag_bytes is None else max_lag_bytes),
            "MAX_LAG_SECONDS": str(limits.max_lag_seconds if max_lag_seconds is None else max_lag_seconds),
        }
        return self.run("ready.sh", role, env=env)

    def connect(self, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
        """The app role over TCP with its password (SCRAM), autocommit."""
        return psycopg.connect(
            host=LOOPBACK,
            port=self.port,
            dbname=self.spec.database,
            user=self.spec.user,
            password=self.passwords.app,
            autocommit=True,
            **kwargs,  # type: ignore[arg-type]
        )

    def execute(self, sql: str) -> None:
        with self.connect() as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def value(self, sql: str) -> object:
        with self.connect() as conn:
            row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
            assert row is not None
            return row[0]

    def crash(self) -> None:
        """SIGKILL the postmaster and all its processes at once, as a killed container's are.

        The postmaster is our child (setpriv execs it): it is reaped at once, so its pid cannot linger
        as a zombie that a restart would take for a live server.
        """
        postmaster = int((self.server.data / "postmaster.pid").read_text().split()[0])
        for pid in [postmaster, *children(postmaster)]:
            os.kill(pid, signal.SIGKILL)
        assert self.server.process is not None
        self.server.process.proc.wait(timeout=30)
        self.server.process.stop()

    def close(self) -> None:
        self.server.close()


def children(parent: int) -> list[int]:
    """Process ids whose parent is `parent`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def run_as_postgres(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = as_uid(RUN_AS, argv)
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=False, timeout=120)


def start_primary(
    spec: PostgresSpec, passwords: PostgresPasswords, scripts: Path, settings: dict[str, str] | None = None
) -> Member:
    """initdb as the image's entrypoint does (the password from its file, a user name from nss_wrapper),
    start, run primary-init.sh; fails loudly if it fails."""
    server = PostgresServer(owned_dir("kit-pg-primary-"), free_port(), {**server_settings(spec), **(settings or {})})
    member = Member(server, spec, passwords, scripts)
    initdb = [postgres_binary("initdb"), "-D", str(server.data), "-U", spec.user]
    initdb += [f"--pwfile={member.secret(PASSWORD_KEY)}", "--encoding=UTF8", "--locale=C", "--no-sync"]
    check(run_as_postgres(initdb, user_name_env(server.root)), "initdb")
    (server.data / "pg_hba.conf").write_text(HBA)
    server.start()
    try:
        initialise(member)
    except BaseException:
        member.close()
        raise
    return member


def initialise(member: Member) -> None:
    """What the entrypoint does once its temporary server is up: the database, then the initdb hook."""
    createdb = ["psql", "-X", "-q", "-d", "postgres", "-c", f'CREATE DATABASE "{member.spec.database}"']
    check(run_as_postgres(createdb, member.env()), "createdb")
    hook_env = {
        "REPLICATION_USER": REPLICATION_USER,
        "REPLICATION_PASSWORD_FILE": member.secret(REPLICATION_PASSWORD_KEY),
    }
    check(member.run("primary-init.sh", env=hook_env), "primary-init.sh")


def start_replica(primary: Member, name: str, settings: dict[str, str] | None = None) -> Member:
    """replica-bootstrap.sh against `primary` (as REPLICA_NAME `name`), then start the clone."""
    server = PostgresServer(owned_dir("kit-pg-replica-"), free_port(), primary.server.settings | (settings or {}))
    replica = Member(server, primary.spec, primary.passwords, primary.scripts)
    try:
        check(bootstrap(replica, primary, name), "replica-bootstrap.sh")
        server.start()
    except BaseException:
        replica.close()
        raise
    return replica


def bootstrap(replica: Member, primary: Member, name: str) -> subprocess.CompletedProcess[str]:
    """replica-bootstrap.sh for `replica`, cloning `primary`, with the env its init container gets:
    the replication password from `replica`'s Secret file, libpq's password file beside PGDATA."""
    return replica.run(
        "replica-bootstrap.sh",
        env={
            "PRIMARY_HOST": LOOPBACK,
            "PRIMARY_PORT": str(primary.port),
            "REPLICATION_USER": REPLICATION_USER,
            "REPLICATION_PASSWORD_FILE": replica.secret(REPLICATION_PASSWORD_KEY),
            "PGPASSFILE": str(replica.server.root / "replication.pgpass"),
            "REPLICA_NAME": name,
            "BOOTSTRAP_TIMEOUT": "30",
        },
    )


def check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def wait_replayed(primary: Member, replica: Member, timeout: float = 30.0) -> None:
    """Wait until `replica` has replayed every WAL record `primary` has written so far."""
    target = primary.value("SELECT pg_current_wal_insert_lsn()")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.value(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
            return
        time.sleep(0.02)
    raise TimeoutError(f"replica on port {replica.port} did not replay up to {target} within {timeout}s")
