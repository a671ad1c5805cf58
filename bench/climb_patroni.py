"""Pieces of bench/climb.py's 2 -> 3 step: the phase-2 pod and Patroni's member 0 on its data directory.

As tests/integration/test_climb_postgres_in_place.py runs them, for real:

- `Plane`: the simulated cluster's real control plane (testsupport/control_plane.py), started once for
  every run; it is Patroni's DCS (the kit's Kubernetes DCS: ConfigMaps, checked against the kit's Role).
- `Phase2`: the kit's phase-2 objects applied (a namespace of their own per run: the group's DCS keys
  are new, as a stack's are the first time it runs Patroni), the phase-2 pod's container on loopback
  as the rendered StatefulSet runs it (the image entrypoint's initdb + primary-init.sh, then
  postgres-start.sh with the rendered args and env); `stop()` is the rolling update deleting the pod:
  the image's STOPSIGNAL, SIGINT, a fast shutdown.
- `adopt()`: the kit's phase-3 objects applied over phase 2's (testsupport/patroni.py's Group: the
  same StatefulSet, its 3 pods played by kwok, each member's token for the group's ServiceAccount);
  the data directory handed to member `postgres-0` (a rename: the same inode, as the claim's volume is
  the same); only member 0 is started here, as the 2 -> 3 "expand" stage does.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from bench.postgres_support import Member as Phase2Member
from bench.postgres_support import start_primary
from components import config, postgres
from components.labels import Meta
from components.pods import SECRETS_DIR
from components.postgres import PostgresSpec
from testsupport.control_plane import ControlPlane
from testsupport.patroni import PASSWORDS, UID, Group, require_patroni
from testsupport.postgres import postgres_binary
from testsupport.process import LOOPBACK, ServerProcess, owned_by

PHASE2: PostgresSpec = config.from_values({"phase": 2}).postgres
PHASE3: PostgresSpec = config.from_values({"phase": 3}).postgres
SYSID = "SELECT system_identifier::text FROM pg_control_system()"
TIMELINE = "SELECT timeline_id FROM pg_control_checkpoint()"


class Plane:
    """The control plane, in a home of its own (its own ports; never a cluster of someone else's)."""

    def __init__(self) -> None:
        require_patroni()
        self.home = Path(tempfile.mkdtemp(prefix="bench-climb-plane-"))
        try:
            self.plane = ControlPlane.start(self.home)
        except BaseException:
            shutil.rmtree(self.home, ignore_errors=True)
            raise

    def close(self) -> None:
        try:
            self.plane.stop()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)


def meta(namespace: str) -> Meta:
    """The Meta testsupport.patroni.Group renders the group with: phase 2 must be the same stack."""
    return Meta(namespace=namespace, instance="test", version="0.1.0")


def write_scripts(objects: list[dict[str, Any]]) -> Path:
    """The rendered scripts ConfigMap's files, as the pod's volume holds them (mode 0555)."""
    data = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == postgres.MAIN.scripts)
    folder = owned_by(UID, Path(tempfile.mkdtemp(prefix="climb-scripts-")), 0o755)
    for name, text in data["data"].items():
        path = folder / name
        path.write_text(text)
        path.chmod(0o555)
    return folder


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The StatefulSet `postgres`'s Postgres container, as rendered."""
    sts = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == postgres.MAIN.members)
    found: dict[str, Any] = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == postgres.NAME)
    return found


def phase2_pod(member: Phase2Member, rendered: dict[str, Any]) -> ServerProcess:
    """The phase-2 container on loopback: the rendered command, args and env, the pod's paths mapped
    to the member's (data directory, socket directory, Secret files) and its port."""
    server = member.server
    paths = {
        postgres.PGDATA: str(server.data),
        postgres.SOCKET_DIR: str(server.root),
        SECRETS_DIR: str(server.root / "secrets"),
    }

    def local(value: str) -> str:
        for pod_path, path in paths.items():
            if value == pod_path or value.startswith(f"{pod_path}/"):
                return path + value.removeprefix(pod_path)
        return value

    env = {variable["name"]: local(variable["value"]) for variable in rendered["env"]}
    env |= {"PGPORT": str(server.port), "PATH": f"{Path(postgres_binary('postgres')).parent}:{os.environ['PATH']}"}
    command = rendered["command"][0].replace(postgres.SCRIPTS_DIR, str(member.scripts))
    argv = [command, *rendered["args"], "-c", f"port={server.port}", "-c", f"listen_addresses={LOOPBACK}"]
    argv += ["-c", f"unix_socket_directories={server.root}"]
    return ServerProcess(argv, ready=server.accepting, log=server.root / "pod.log", env=env, uid=UID)


class Phase2:
    """Phase 2's single server in `namespace`: its objects in the API server, its pod on loopback."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.plane = plane
        self.namespace = namespace
        objects = postgres.postgres_objects(meta(namespace), PHASE2, PASSWORDS, postgres.MAIN)
        plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}, *objects])
        self.scripts = write_scripts(objects)
        self.group: Group | None = None
        self.pod: ServerProcess | None = None
        try:
            self.primary = start_primary(PHASE2, PASSWORDS, self.scripts)  # entrypoint initdb + primary-init.sh
            self.primary.server.stop()  # the container's later starts: postgres-start.sh on the existing cluster
            self.pod = phase2_pod(self.primary, container(objects))
        except BaseException:
            self.close()
            raise
        self.sysid = str(self.primary.value(SYSID))

    @property
    def port(self) -> int:
        return self.primary.port

    def dsn(self, port: int | None = None) -> str:
        """The app role's URL (no password: DATABASE_PASSWORD_FILE carries it) on `port` (default its own)."""
        return f"postgresql://{PHASE2.user}@{LOOPBACK}:{port or self.port}/{PHASE2.database}"

    def prepare_phase3(self) -> Group:
        """The kit's phase-3 objects over phase 2's (StatefulSet scaled to 3, kwok's pods running) and the
        members' files and tokens: what exists before the rolling update reaches pod 0."""
        self.group = Group(self.plane, self.namespace, PHASE3)
        return self.group

    def stop(self) -> None:
        """The rolling update deletes the pod: SIGINT (the image's STOPSIGNAL), a fast shutdown."""
        assert self.pod is not None
        self.pod.proc.send_signal(signal.SIGINT)
        code = self.pod.proc.wait(timeout=60)
        self.pod.stop()
        if code != 0:
            raise RuntimeError(f"the phase-2 pod exited {code}:\n{self.primary.server.root / 'pod.log'}")

    def hand_over(self) -> Path:
        """The data directory becomes member 0's (the same directory: renamed, same inode)."""
        assert self.group is not None
        volume = self.group.members[0].root / "data"
        os.rename(self.primary.server.data, volume)
        return volume

    def close(self) -> None:
        if self.pod is not None:
            self.pod.stop()
        if self.group is not None:
            self.group.close()
        primary = getattr(self, "primary", None)
        if primary is not None:
            primary.close()
        shutil.rmtree(self.scripts, ignore_errors=True)
