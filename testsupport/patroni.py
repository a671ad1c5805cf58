"""Real Patroni groups for tests: the kit's group on a real API server, its members on loopback.

The kit's own objects for a Postgres group (`components.postgres.postgres_objects`: Secret,
ConfigMaps, ServiceAccount, Role, RoleBinding, StatefulSet, Services) are applied to the simulated
cluster's real kube-apiserver; kwok plays the StatefulSet's pods. Each pod's container is then run
here for real: the kit's `patroni-start.sh` from the rendered scripts ConfigMap, with the rendered
`patroni.yml`, Patroni 4.1.5 from images/postgres-patroni/requirements.txt, Debian's PostgreSQL 15,
as the pod's uid (10002), with a token of the group's ServiceAccount: every API call Patroni makes
is checked by the real API server against the kit's Role.

One file, `50-loopback.yml`, is added to the configuration: what a pod has and this machine does
not (its own network address and ports, data and socket directories, the kubeconfig context).

Each member runs in a PID namespace of its own, as a container does: Patroni is its PID 1 (and
reaps Postgres, as it does in a pod), and `kill()` ends every process in it at once, as a node
failure or an OOM kill of the container would. Each member reaches the API server through its
own TcpProxy, and the others reach its Postgres through another (its connect address), so a test
can cut a member off from the API server, or its replicas off from it, while clients still reach it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import yaml

from components import patroni, postgres
from components.labels import Meta
from components.postgres import PostgresPasswords, PostgresSpec
from testsupport.control_plane import ControlPlane
from testsupport.postgres import INSTALL_HINT as INSTALL_POSTGRES
from testsupport.postgres import user_name_env
from testsupport.process import LOOPBACK, ServerProcess, as_uid, free_port, missing, owned_by, wait_for, write_secret
from testsupport.tcp_proxy import TcpProxy

VENV = Path("/opt/scaleladder/patroni")
"""Patroni's virtual environment, built by .ci/run from images/postgres-patroni/requirements.txt on
Debian's Python 3.11 (the image's), outside /root so that the Postgres uid can run it."""
INSTALL_HINT = (
    "uv venv --python /usr/bin/python3.11 /opt/scaleladder/patroni && uv pip install --python "
    "/opt/scaleladder/patroni/bin/python --require-hashes -r images/postgres-patroni/requirements.txt"
)
UID = postgres.RUN_AS
PASSWORDS = PostgresPasswords(app="AppPassw0rd", replication="ReplPassw0rd")


def require_patroni() -> None:
    """A skip (a failure in CI) saying how to build Patroni's virtualenv, when it is not there."""
    binary = VENV / "bin" / "patroni"
    if not binary.exists():
        missing(str(binary), INSTALL_HINT)


class Member:
    """One pod of the group (`<group>-<index>`), run here: Patroni and the Postgres it runs."""

    def __init__(self, group: Group, index: int) -> None:
        self.group = group
        self.name = f"{group.names.members}-{index}"
        self.root = owned_by(UID, Path(tempfile.mkdtemp(prefix=f"patroni-{self.name}-")))
        self.port = free_port()
        self.api_port = free_port()
        self.config_dir = self._dir("etc")
        self.run_dir = self._dir("run")
        self.proxy = TcpProxy(group.plane.api_server_port())
        """This member's way to the API server (cut it to partition the member from its DCS)."""
        self.network = TcpProxy(self.port)
        """The other members' way to this member's Postgres (replication, pg_rewind): its connect address."""
        self.process: ServerProcess | None = None
        for name, text in group.config_files.items():
            (self.config_dir / name).write_text(text)
        (self.config_dir / "50-loopback.yml").write_text(yaml.safe_dump(self._loopback(), sort_keys=False))
        secrets = self._dir("secrets")
        self.secret_files = {
            key: write_secret(secrets / key, value, UID)
            for key, value in (
                (postgres.PASSWORD_KEY, PASSWORDS.app),
                (postgres.REPLICATION_PASSWORD_KEY, PASSWORDS.replication),
            )
        }
        kubeconfig = group.plane.token_kubeconfig(
            self.root / "kubeconfig", group.namespace, group.names.patroni, self.proxy.port
        )
        owned_by(UID, kubeconfig, 0o600)

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir()
        return owned_by(UID, path)

    def _loopback(self) -> dict[str, Any]:
        """What differs from a pod: addresses, ports, directories and the kubeconfig context."""
        return {
            "restapi": {"listen": f"{LOOPBACK}:{self.api_port}"},
            "kubernetes": {"context": "pod"},
            "bootstrap": {"post_bootstrap": str(self.group.scripts / "patroni-post-bootstrap.sh")},
            "postgresql": {
                "listen": f"{LOOPBACK}:{self.port}",
                "data_dir": str(self.root / "data"),
                "pgpass": str(self.root / "pgpass"),
                "parameters": {"unix_socket_directories": str(self.root)},
            },
        }

    def env(self) -> dict[str, str]:
        """The pod's environment (the container's env with the Downward API filled in), for loopback."""
        names = self.group.names
        return {
            "POD_NAME": self.name,
            "MEMBERS_HOST": names.members,
            "POSTGRES_DB": self.group.spec.database,
            "SUPERUSER_PASSWORD_FILE": str(self.secret_files[postgres.PASSWORD_KEY]),
            "REPLICATION_PASSWORD_FILE": str(self.secret_files[postgres.REPLICATION_PASSWORD_KEY]),
            "PATRONI_CONFIG_DIR": str(self.config_dir),
            "PATRONI_RUN_DIR": str(self.run_dir),
            "PATRONI_POSTGRESQL_CONNECT_ADDRESS": f"{LOOPBACK}:{self.network.port}",
            "PATRONI_RESTAPI_CONNECT_ADDRESS": f"{LOOPBACK}:{self.api_port}",
            "KUBECONFIG": str(self.root / "kubeconfig"),
            "HOME": str(self.root),
            "PATH": f"{VENV / 'bin'}:{self.group.bin_dir}:/usr/bin:/bin",
            "PGHOST": str(self.root),
            "PGPORT": str(self.port),
            "PGUSER": self.group.spec.user,
            "PGDATABASE": self.group.spec.database,
            **user_name_env(self.root),
        }

    def start(self, timeout: float = 120.0) -> None:
        """Start the member's container; returns once Patroni's REST API answers."""
        log = self.root / "patroni.log"
        argv = [
            "unshare", "--pid", "--fork", "--mount", "--mount-proc", "--kill-child",
            *as_uid(UID, [str(self.group.scripts / "patroni-start.sh")]),
        ]  # fmt: skip
        self.process = ServerProcess(argv, ready=lambda: self.api("/liveness") is not None, log=log, env=self.env(),
                                     timeout=timeout)  # fmt: skip

    def _container_init(self) -> int | None:
        """The host pid of the member's PID 1 (Patroni): the child of `unshare`."""
        if self.process is None or not self.process.running:
            return None
        pid = self.process.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return int(children[0]) if children else None

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        """Send `sig` to the container's PID 1 and wait until the whole namespace is gone."""
        init = self._container_init()
        if init is not None:
            os.kill(init, sig)
        if self.process is not None:
            self.process.proc.wait(timeout=timeout)
            self.process.stop()

    def kill(self) -> None:
        """The container dies at once with everything in it: SIGKILL to its PID 1, which the kernel
        follows by killing every process of the namespace. (Killing `unshare` is not enough: its
        --kill-child signal is cleared when setpriv changes the uid.)"""
        self._end(signal.SIGKILL, 30)

    def stop(self) -> None:
        """A pod deleted: SIGTERM to Patroni (PID 1 in its namespace), which stops Postgres first."""
        self._end(signal.SIGTERM, 90)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def api(self, path: str) -> dict[str, Any] | None:
        """GET Patroni's REST API: the JSON of a 200 or 503 answer, None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.api_port}{path}", timeout=2) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            body = error.read()
        except OSError:
            return None
        try:
            parsed: dict[str, Any] = json.loads(body) if body else {}
        except ValueError:
            parsed = {}
        return parsed

    def status(self, path: str) -> int | None:
        """The HTTP status of GET `path` on the REST API (200 / 503), None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.api_port}{path}", timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return None

    def role(self) -> str | None:
        """`primary`, `replica`, ... as Patroni reports it; None when it does not answer."""
        found = self.api("/patroni")
        return None if found is None else found.get("role")

    def connect(self, **kwargs: Any) -> psycopg.Connection[tuple[Any, ...]]:
        """The app role over TCP with its password (SCRAM), as the web tier connects."""
        spec = self.group.spec
        return psycopg.connect(
            host=LOOPBACK, port=self.port, user=spec.user, password=PASSWORDS.app, dbname=spec.database,
            connect_timeout=2, **kwargs,
        )  # fmt: skip

    def value(self, sql: str) -> Any:
        with self.connect(autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
        return None if row is None else row[0]

    def writable(self) -> bool:
        """The server accepts connections and is not in recovery."""
        try:
            return self.value("SELECT NOT pg_is_in_recovery()") is True
        except psycopg.Error:
            return False

    def log(self) -> str:
        path = self.root / "patroni.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Kill the member and delete its files; closing twice is harmless."""
        self.kill()
        self.proxy.close()
        self.network.close()
        shutil.rmtree(self.root, ignore_errors=True)


class Group:
    """The kit's Postgres group `names.members` in namespace `namespace`, with `members` members."""

    def __init__(self, plane: ControlPlane, namespace: str, spec: PostgresSpec) -> None:
        require_patroni()
        self.plane = plane
        self.namespace = namespace
        self.spec = spec
        self.names = postgres.MAIN
        self.meta = Meta(namespace=namespace, instance="test", version="0.1.0")
        self.objects = postgres.postgres_objects(self.meta, spec, PASSWORDS, self.names)
        data = {o["metadata"]["name"]: o.get("data", {}) for o in self.objects if o["kind"] == "ConfigMap"}
        self.config_files = {patroni.CONFIG_FILE: data[self.names.patroni][patroni.CONFIG_FILE]}
        self.bin_dir = Path(yaml.safe_load(self.config_files[patroni.CONFIG_FILE])["postgresql"]["bin_dir"])
        if not (self.bin_dir / "postgres").exists():
            missing(str(self.bin_dir / "postgres"), INSTALL_POSTGRES)
        self.scripts = owned_by(UID, Path(tempfile.mkdtemp(prefix="patroni-scripts-")), 0o755)
        for name, text in data[self.names.scripts].items():
            path = self.scripts / name
            path.write_text(text)
            path.chmod(0o555)
        namespace_object = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        plane.apply([namespace_object, *self.objects])
        wait_for(self._pods_running, 60, f"the StatefulSet's {1 + spec.replicas} pods running in {namespace}")
        self.members = [Member(self, index) for index in range(1 + spec.replicas)]

    def _pods_running(self) -> bool:
        pods = self.pods()
        return len(pods) == 1 + self.spec.replicas and all(p["status"].get("podIP") for p in pods.values())

    def pods(self) -> dict[str, dict[str, Any]]:
        """The group's pods in the API server, by name."""
        selector = ",".join(f"{k}={v}" for k, v in self.meta.selector(self.names.members).items())
        items = self.plane.get("pods", "-n", self.namespace, "-l", selector)["items"]
        return {pod["metadata"]["name"]: pod for pod in items}

    def member(self, name: str) -> Member:
        return next(member for member in self.members if member.name == name)

    def start(self) -> None:
        """Start every member, then wait for one leader and every other member streaming from it."""
        for member in self.members:
            member.start()
        self.wait_healthy()

    def leader_annotation(self) -> str | None:
        """The holder of the leader lock, as the API server has it (`<group>-leader` ConfigMap)."""
        return self.annotations("leader").get("leader")

    def annotations(self, config_map: str) -> dict[str, str]:
        """The annotations of one of Patroni's ConfigMaps (`leader`, `sync`, `config`), {} when absent."""
        name = f"{self.names.members}-{config_map}"
        found = self.plane.get("configmaps", "-n", self.namespace, "--field-selector", f"metadata.name={name}")
        items = found.get("items") or [{}]
        return dict((items[0].get("metadata") or {}).get("annotations") or {})

    def sync_standby(self) -> str | None:
        """The member Patroni's sync key names as the synchronous standby (the only one it may promote)."""
        return self.annotations("sync").get("sync_standby") or None

    def logs(self, lines: int = 40) -> str:
        """The last lines of every member's log, for a failure message."""
        return "\n".join(f"--- {m.name}\n" + "\n".join(m.log().splitlines()[-lines:]) for m in self.members)

    def leader(self) -> Member | None:
        """The running member that reports itself primary and accepts writes, if exactly one does."""
        found = [m for m in self.members if m.running and m.role() == "primary" and m.writable()]
        return found[0] if len(found) == 1 else None

    def wait_healthy(self, timeout: float = 180.0) -> Member:
        """One leader, every other running member a replica that streams from it and is ready, and in
        synchronous mode one of them the synchronous standby."""

        def healthy() -> Member | None:
            leader = self.leader()
            if leader is None:
                return None
            replicas = [m for m in self.members if m.running and m is not leader]
            ready = all(m.status(f"/readiness?lag={self.spec.replication.max_lag_bytes}") == 200 for m in replicas)
            streaming = leader.value("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
            # in synchronous mode, only the standby the sync key names may be promoted: none yet, no failover
            synchronous = not self.spec.ha.synchronous_mode or self.sync_standby() in {m.name for m in replicas}
            return leader if ready and streaming == len(replicas) and synchronous else None

        try:
            leader: Member = wait_for(healthy, timeout, f"group {self.names.members} healthy", interval=0.5)
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{self.logs()}") from error
        return leader

    def dsn(self) -> str:
        """A libpq URL over every member that connects to the writable one, as `postgres-rw` does."""
        hosts = ",".join(f"{LOOPBACK}:{m.port}" for m in self.members)
        spec = self.spec
        return (
            f"postgresql://{spec.user}:{PASSWORDS.app}@{hosts}/{spec.database}"
            "?target_session_attrs=read-write&connect_timeout=1"
        )

    def close(self) -> None:
        for member in self.members:
            member.close()
        shutil.rmtree(self.scripts, ignore_errors=True)
