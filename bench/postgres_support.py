"""The kit's Postgres servers on loopback, built the way the pods build them, by the kit's own files.

Shared by tests/integration/test_postgres_server.py, test_postgres_pooler.py and
bench/postgres_replica_lag.py. Patroni itself is not run here (testsupport/patroni.py runs a group).

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
- A replica (phase 3 on, a member of a Patroni group) is cloned as Patroni clones one, not by a kit
  script: the replication role's password, read from the replica's own Secret file, goes into a libpq
  password file (mode 0600, the pods' uid), and `pg_basebackup -X stream --checkpoint=fast` runs as
  that uid and role over TCP. Around it Patroni writes `primary_conninfo` and `primary_slot_name`, and
  its leader creates the member's slot; here `-R -C -S <slot>` do the same, with Patroni's slot name
  for a pod (`postgres-1` -> `postgres_1`). Then `postgres` starts on the clone.

Scripts reach their own server the way probes do in the pod: PGHOST is the socket directory.
"""

from __future__ import annotations

import os
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
from testsupport.process import LOOPBACK, as_uid, free_port, owned_by, write_secret

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

    def close(self) -> None:
        self.server.close()


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


def slot_name(member: str) -> str:
    """Patroni's replication slot for a member named after its pod: every `-` an `_`."""
    return member.replace("-", "_")


def clone_replica(primary: Member, name: str, settings: dict[str, str] | None = None) -> Member:
    """A replica of `primary` for the member (pod) `name`, cloned as Patroni does (`basebackup`), started."""
    server = PostgresServer(owned_dir("kit-pg-replica-"), free_port(), primary.server.settings | (settings or {}))
    replica = Member(server, primary.spec, primary.passwords, primary.scripts)
    try:
        check(basebackup(replica, primary, name), "pg_basebackup")
        server.start()
    except BaseException:
        replica.close()
        raise
    return replica


def basebackup(replica: Member, primary: Member, name: str) -> subprocess.CompletedProcess[str]:
    """Clone `primary` into `replica`'s empty data directory as Patroni does; never raises on failure.

    Patroni writes its libpq password file (`postgresql.pgpass`) with the replication credentials
    from its configuration (patroni-start.sh reads them from the Secret's file), one line for the
    leader's address, mode 0600, and runs pg_basebackup with PGPASSFILE naming it; primary_conninfo
    names the file too, so the password is on no command line and in no environment.
    """
    passfile = write_pgpass(replica, primary)
    conninfo = f"host={LOOPBACK} port={primary.port} user={REPLICATION_USER}"
    argv = [postgres_binary("pg_basebackup"), "-d", conninfo, "-D", str(replica.server.data), "-w"]
    argv += ["-X", "stream", "-R", "-C", "-S", slot_name(name), "--checkpoint=fast"]
    return run_as_postgres(argv, {"PGPASSFILE": str(passfile)})


def write_pgpass(replica: Member, primary: Member) -> Path:
    """Patroni's password file for reaching `primary` as the replication role, in `replica`'s folder."""
    with open(replica.secret(REPLICATION_PASSWORD_KEY)) as secret:
        password = secret.readline().rstrip("\n")  # patroni-start.sh takes the file's first line

    def escape(value: object) -> str:
        return str(value).replace("\\", "\\\\").replace(":", "\\:")

    path = replica.server.root / "pgpass"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(f"{escape(LOOPBACK)}:{primary.port}:*:{escape(REPLICATION_USER)}:{escape(password)}\n")
    return owned_by(RUN_AS, path, 0o600)


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
