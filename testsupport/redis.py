"""Real Redis servers for tests: a standalone redis-server, and a Redis Cluster of plain redis-servers.

Each server runs in the foreground on a free loopback port, without persistence (no RDB, no AOF),
its working directory in a temporary folder.

    server = RedisServer.start()                 # standalone
    server.command("PING")                       # redis-cli, returns the reply text
    cluster = RedisCluster.start(masters=3)      # 3 masters, all 16384 slots assigned, state ok
    cluster.seed_url                              # redis://127.0.0.1:PORT of one node
    cluster.flushall(); cluster.close()
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from testsupport.process import LOOPBACK, ServerProcess, free_port, port_open, require_binary

INSTALL_HINT = "Debian: apt-get install redis-server redis-tools"


def redis_cli(port: int, *args: str, timeout: float = 10.0) -> str:
    """Run one command with redis-cli against 127.0.0.1:port and return its raw reply text."""
    cli = require_binary("redis-cli", INSTALL_HINT)
    result = subprocess.run(
        [cli, "-h", LOOPBACK, "-p", str(port), *args], check=False, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)} on port {port} failed: {result.stderr.strip()}")
    return result.stdout.strip()


class RedisServer:
    """One redis-server process; `extra_args` are passed through (e.g. `--cluster-enabled yes`)."""

    def __init__(self, root: Path, port: int, extra_args: Sequence[str] = ()) -> None:
        self.root = root
        self.port = port
        self.extra_args = list(extra_args)
        self.process: ServerProcess | None = None

    @classmethod
    def start(cls, extra_args: Sequence[str] = ()) -> RedisServer:
        """A new standalone server in its own temporary directory, accepting connections."""
        server = cls(Path(tempfile.mkdtemp(prefix="redis-")), free_port(), extra_args)
        server.run()
        return server

    def run(self, timeout: float = 30.0) -> None:
        """Start (or restart) the process on the same port and directory."""
        argv = [require_binary("redis-server", INSTALL_HINT), "--port", str(self.port), "--bind", LOOPBACK]
        argv += ["--dir", str(self.root), "--save", "", "--appendonly", "no", "--protected-mode", "no"]
        argv += self.extra_args
        self.process = ServerProcess(argv, ready=self._pong, log=self.root / "redis.log", timeout=timeout)

    def _pong(self) -> bool:
        return port_open(self.port) and self.command("PING") == "PONG"

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def command(self, *args: str) -> str:
        return redis_cli(self.port, *args)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisCluster:
    """`masters` cluster-enabled redis-servers joined with `redis-cli --cluster create`, no replicas."""

    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes

    @classmethod
    def start(cls, masters: int = 3, timeout: float = 30.0) -> RedisCluster:
        """Start the nodes, assign all slots across them, and wait until every node reports cluster_state:ok."""
        if masters < 3:
            raise ValueError(f"masters: redis-cli --cluster create needs at least 3 masters, got {masters}")
        cluster_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        cluster_args += ["--cluster-node-timeout", "5000"]
        nodes: list[RedisServer] = []
        try:
            for _ in range(masters):
                # The bus port defaults to port + 10000, which may be taken or out of range: pick one.
                nodes.append(RedisServer.start([*cluster_args, "--cluster-port", str(free_port())]))
            addresses = [f"{LOOPBACK}:{node.port}" for node in nodes]
            redis_cli(nodes[0].port, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes")
            cluster = cls(nodes)
            cluster._wait_ok(timeout)
        except BaseException:
            for node in nodes:
                node.close()
            raise
        return cluster

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in node.command("CLUSTER", "INFO") for node in self.nodes):
                return
            time.sleep(0.1)
        raise TimeoutError(f"cluster on ports {[n.port for n in self.nodes]} not ok after {timeout}s")

    @property
    def seed_url(self) -> str:
        """The URL of the first node: a cluster client discovers the others from it."""
        return self.nodes[0].url

    def flushall(self) -> None:
        """Delete every key on every master."""
        for node in self.nodes:
            node.command("FLUSHALL")

    def close(self) -> None:
        for node in self.nodes:
            node.close()
