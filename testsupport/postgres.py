"""Real PostgreSQL servers for tests: a primary from initdb, streaming replicas from pg_basebackup.

Every server runs in the foreground as the kit's Postgres uid and gid (10002, `components.postgres.RUN_AS`,
which has no user entry, as in the pods; Postgres refuses root) on a free loopback port, with its data
directory in a temporary folder that uid owns. initdb, the one program that needs a user name, gets one
from nss_wrapper, as the official image's entrypoint gives it. Authentication is
`trust` on loopback: these servers hold test data only and listen on 127.0.0.1 alone.

    primary = PostgresServer.primary()           # initdb + start
    replica = primary.replica()                  # pg_basebackup -R + start, streaming
    primary.sql("CREATE TABLE t (x int)")
    primary.wait_replayed(replica)               # replica has replayed everything written so far
    primary.stop(); primary.start()              # same port and data: a restart
    replica.close(); primary.close()             # stop and delete the data directories
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from components.postgres import RUN_AS as UID
from testsupport.process import LOOPBACK, ServerProcess, as_uid, free_port, missing, owned_by, require_binary

SUPERUSER = "postgres"
INSTALL_HINT = "Debian: apt-get install postgresql"
NSS_WRAPPER_HINT = "Debian: apt-get install libnss-wrapper"

# Durability is irrelevant for test data; these settings make initdb, startup and writes fast.
FAST_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "hot_standby": "on",
    "shared_buffers": "32MB",
    "max_connections": "100",
}


def postgres_binary(name: str) -> str:
    """A PostgreSQL program from PATH, else from the newest /usr/lib/postgresql/*/bin (Debian's place)."""
    found = shutil.which(name)
    if found:
        return found
    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        candidate = Path(bin_dir) / name
        if candidate.exists():
            return str(candidate)
    return require_binary(name, INSTALL_HINT)


def _version_key(path: str) -> int:
    version = Path(path).parent.name
    return int(version) if version.isdigit() else 0


def owned_tempdir(prefix: str) -> Path:
    """A fresh temporary folder the Postgres uid owns (when we are root) with mode 0700."""
    return owned_by(UID, Path(tempfile.mkdtemp(prefix=prefix)))


def _as_postgres(argv: list[str]) -> list[str]:
    return as_uid(UID, argv)


def user_name_env(root: Path) -> dict[str, str]:
    """The environment that gives the uid a user name (`postgres`) through nss_wrapper, with its
    passwd and group files written in `root`; nothing when we are not root (our own user has one)."""
    if os.geteuid() != 0:
        return {}
    if not glob.glob("/usr/lib/*/libnss_wrapper.so"):
        missing("libnss_wrapper.so", NSS_WRAPPER_HINT)
    passwd, group = root / "nss-passwd", root / "nss-group"
    passwd.write_text(f"postgres:x:{UID}:{UID}:PostgreSQL:{root}:/bin/false\n")
    group.write_text(f"postgres:x:{UID}:\n")
    return {"LD_PRELOAD": "libnss_wrapper.so", "NSS_WRAPPER_PASSWD": str(passwd), "NSS_WRAPPER_GROUP": str(group)}


class PostgresServer:
    """One PostgreSQL server (primary or standby) whose data directory lives in `self.root`."""

    def __init__(self, root: Path, port: int, settings: dict[str, str] | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.settings = {**FAST_SETTINGS, **(settings or {})}
        self.process: ServerProcess | None = None

    @classmethod
    def primary(cls, settings: dict[str, str] | None = None) -> PostgresServer:
        """initdb a new cluster (superuser `postgres`, trust auth, UTF8) and start it."""
        server = cls(owned_tempdir("pg-primary-"), free_port(), settings)
        subprocess.run(
            _as_postgres(
                [
                    postgres_binary("initdb"),
                    "-D",
                    str(server.data),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
            env={**os.environ, **user_name_env(server.root)},
        )
        server.start()
        return server

    def replica(self, settings: dict[str, str] | None = None) -> PostgresServer:
        """A streaming hot standby of this server: pg_basebackup -R (standby.signal + primary_conninfo), started."""
        standby = PostgresServer(owned_tempdir("pg-replica-"), free_port(), settings)
        subprocess.run(
            _as_postgres(
                [
                    postgres_binary("pg_basebackup"),
                    "-h",
                    LOOPBACK,
                    "-p",
                    str(self.port),
                    "-U",
                    SUPERUSER,
                    "-D",
                    str(standby.data),
                    "-R",
                    "-X",
                    "stream",
                    "--checkpoint=fast",  # the default, spread, can wait minutes for the checkpoint
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        standby.start()
        return standby

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart) the server on its port; returns once it accepts connections."""
        argv = [postgres_binary("postgres"), "-D", str(self.data), "-c", f"port={self.port}"]
        argv += ["-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={self.root}"]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        log = self.root / "postgres.log"
        log.touch()
        owned_by(UID, log, 0o600)
        self.process = ServerProcess(argv, ready=self.accepting, log=log, timeout=timeout, uid=UID)

    def accepting(self) -> bool:
        """True when the server accepts connections (pg_isready)."""
        probe = [postgres_binary("pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port), "-t", "1"]
        return subprocess.run(probe, check=False).returncode == 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def stop(self) -> None:
        """Fast shutdown (disconnect clients, checkpoint) and wait for the process.

        pg_ctl waits for the shutdown checkpoint; the process is then reaped.
        """
        if self.process is None or not self.process.running:
            return
        subprocess.run(
            _as_postgres([postgres_binary("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30"]),
            check=False,
            capture_output=True,
        )
        self.process.stop()

    def close(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URL for this server over TCP loopback."""
        return f"postgresql://{user}@{LOOPBACK}:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run SQL through psql and return its unaligned, tuples-only output; raises on error."""
        result = subprocess.run(
            [postgres_binary("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", self.dsn(database), "-c", statement],
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql on port {self.port} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name (on a primary) and return its DSN."""
        self.sql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def wait_replayed(self, standby: PostgresServer, timeout: float = 30.0) -> None:
        """Wait until `standby` has replayed all WAL this primary has written so far."""
        target = self.sql("SELECT pg_current_wal_insert_lsn()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if standby.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") == "t":
                return
            time.sleep(0.05)
        raise TimeoutError(f"standby on port {standby.port} did not replay up to {target} within {timeout}s")
