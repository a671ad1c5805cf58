"""The kit's Redis Cluster on loopback (tests and benchmarks): the rendered redis.conf, node-start.sh,
cluster-bootstrap.sh, cluster-rejoin.sh and failover-watch.sh run with real redis-server processes.

Each node stands in for a pod: it listens on its own 127.x.y.z address (its "pod IP"), on the
same port as every other node (as every pod uses 6379), announces a stable hostname
(`redis-shard-S-N.test`, pod N of shard S) and keeps nodes.conf and its AOF in its own directory
(its volume). A pod that comes back with a new IP is a node restarted on another 127.x.y.z with
the same directory and hostname. Each node runs its pod's helper containers as sidecar
processes: cluster-rejoin.sh and, unless the spec turns it off, failover-watch.sh. Cluster clients
reach nodes by announced hostname; `address_remap` plays the role of the cluster DNS for them.

Every process (redis-server and the kit's scripts) runs, as root, as the pods' uid and gid
(`components.redis.RUN_AS`, with no user entry), in a directory that uid owns, and reads the
password from a file owned by root and that group, mode 0440, as the pods' projected Secret.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from components.redis import RUN_AS, SCRIPTS, RedisSpec
from components.redis_cluster import cluster_conf
from testsupport.process import ServerProcess, as_uid, owned_by, require_binary, write_secret

INSTALL_HINT = "Debian: apt-get install redis-server redis-tools"
PASSWORD = 'integration "pass" \\ word'
SLOTS = 16384
BOOTSTRAP_TIMEOUT = 60
# how long a bootstrap may run before it counts as hung: a rebalance moves slots one by one, which
# on a loaded machine takes minutes
BOOTSTRAP_HANG_SECONDS = 300


def bindable(ip: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


class Node:
    """One cluster member: node-start.sh with the rendered redis.conf, in its own directory."""

    def __init__(self, cluster: LoopbackCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        size = 1 + cluster.spec.replicas_per_master
        self.shard = index // size
        self.hostname = f"redis-shard-{self.shard}-{index % size}.test"
        self.dir = cluster.root / self.hostname
        self.run_dir = self.dir / "run"
        self.run_dir.mkdir(parents=True)
        owned_by(RUN_AS, self.dir, 0o755)
        owned_by(RUN_AS, self.run_dir)
        self.ip = ""
        self.process: ServerProcess | None = None
        self.sidecar: ServerProcess | None = None
        self.watcher: ServerProcess | None = None
        self.paused = False

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.cluster.port}"

    def start(self, ip: str) -> None:
        """Start redis-server on `ip` (as a pod on a new IP), and the sidecars unless they still run."""
        self.ip = ip
        # the loopback stand-in for a pod's network: listen on, and connect from, this one address
        argv = ["sh", str(SCRIPTS / "node-start.sh"), "--bind", ip, "--bind-source-addr", ip]
        argv += ["--port", str(self.cluster.port)]
        argv += ["--cluster-announce-hostname", self.hostname]
        env = {
            "REDIS_CONFIG": str(self.cluster.conf),
            "REDIS_RUN_DIR": str(self.run_dir),
            "REDIS_PASSWORD_FILE": str(self.cluster.password_file),
        }
        self.process = ServerProcess(
            argv, ready=self.answers, log=self.dir / "redis.log", env=env, cwd=self.dir, timeout=30, uid=RUN_AS
        )
        if self.sidecar is None or not self.sidecar.running:
            self.start_sidecar()
        if self.cluster.spec.failover_watch and (self.watcher is None or not self.watcher.running):
            self.start_watcher()

    def start_sidecar(self) -> None:
        """cluster-rejoin.sh, as the pod's `rejoin` container, with 1 s rounds instead of 10 s."""
        env = {**self.cluster.env(), "REDIS_SELF": self.address, "REDIS_RUN_DIR": str(self.run_dir)}
        env["REDIS_REJOIN_INTERVAL"] = "1"
        heartbeat = self.run_dir / "rejoin.alive"
        heartbeat.unlink(missing_ok=True)
        self.sidecar = ServerProcess(
            ["sh", str(SCRIPTS / "cluster-rejoin.sh")],
            ready=heartbeat.exists,
            log=self.dir / "rejoin.log",
            env=env,
            uid=RUN_AS,
        )

    def start_watcher(self) -> None:
        """failover-watch.sh, as the pod's `failover-watch` container; its log is `watch_log`."""
        env = {**self.cluster.env(), "REDIS_SELF": self.address, "REDIS_RUN_DIR": str(self.run_dir)}
        env["REDIS_NODE_TIMEOUT_MS"] = str(self.cluster.spec.node_timeout_ms)
        heartbeat = self.run_dir / "failover-watch.alive"
        heartbeat.unlink(missing_ok=True)
        self.watcher = ServerProcess(
            ["sh", str(SCRIPTS / "failover-watch.sh")], ready=heartbeat.exists, log=self.watch_log, env=env, uid=RUN_AS
        )

    @property
    def watch_log(self) -> Path:
        return self.dir / "failover-watch.log"

    def pause(self) -> None:
        """SIGSTOP redis-server: alive, its connections open, but answering nothing (a blocked server)."""
        assert self.process is not None
        self.process.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def id(self) -> str:
        return self.raw("CLUSTER MYID")

    def answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(self.ip, self.cluster.port, password=PASSWORD, socket_timeout=2, decode_responses=True)

    def raw(self, *command: str) -> str:
        """A command's reply as the text the server sent (redis-py parses CLUSTER replies its own way)."""
        with self.client() as client:
            client.set_response_callback(" ".join(command), lambda response, **options: response)
            return str(client.execute_command(*command))

    def nodes(self) -> dict[str, dict[str, object]]:
        """CLUSTER NODES as this node sees it, by node ID."""
        raw = self.raw("CLUSTER NODES")
        view = {}
        for line in raw.splitlines():
            fields = line.split()
            view[fields[0]] = {
                "address": fields[1].split("@")[0],
                "hostname": fields[1].partition(",")[2],
                "flags": set(fields[2].split(",")),
                "master": fields[3],
                "slots": tuple(fields[8:]),
            }
        return view

    def info(self) -> dict[str, str]:
        return dict(line.split(":", 1) for line in self.raw("CLUSTER INFO").splitlines() if ":" in line)

    def stop(self) -> None:
        if self.paused:
            self.resume()
        for process in (self.watcher, self.sidecar, self.process):
            if process is not None:
                process.stop()


class LoopbackCluster:
    """`spec.pods` nodes on their own loopback addresses, one shared port, redis.conf from the builder.

    `nodes` are in REDIS_NODES order, shard by shard: node `index` is pod `index % (1 + replicas)`
    of shard `index // (1 + replicas)`.
    """

    def __init__(self, spec: RedisSpec) -> None:
        require_binary("redis-server", INSTALL_HINT)
        require_binary("redis-cli", INSTALL_HINT)
        self.root = owned_by(RUN_AS, Path(tempfile.mkdtemp(prefix="kit-redis-cluster-")), 0o755)
        self.spec = spec
        self.conf = self.root / "redis.conf"
        self.conf.write_text(cluster_conf(spec))
        self.password_file = write_secret(self.root / "password", PASSWORD, RUN_AS)
        self.subnet = f"127.{random.randrange(100, 250)}.{random.randrange(1, 250)}"
        self.port = self._free_port(range(2, 140))
        self.nodes = [Node(self, index) for index in range(spec.pods)]
        self.members = self.root / "members"

    def _free_port(self, hosts: range) -> int:
        """A port that is free, with its cluster bus port (+10000), on every address this cluster may use."""
        for _ in range(50):
            port = random.randrange(20000, 30000)
            ips = [f"{self.subnet}.{host}" for host in hosts]
            if all(bindable(ip, port) and bindable(ip, port + 10000) for ip in ips):
                return port
        raise RuntimeError(f"no free port pair on {self.subnet}.0/24")

    def ip(self, host: int) -> str:
        return f"{self.subnet}.{host}"

    def start(self, nodes: list[Node] | None = None, first_host: int = 2) -> None:
        """Start pods: each node on 127.x.y.(first_host + index), then its rejoin sidecar.

        The members file is the sidecars' view of the cluster DNS: in Kubernetes it lists stable
        names whose addresses change; here it lists the addresses, rewritten when they change.
        """
        started = nodes or self.nodes
        for node in started:
            node.ip = self.ip(first_host + node.index)
        self.members.write_text(" ".join(node.address for node in self.nodes))
        for node in started:
            node.start(node.ip)

    def grow(self, spec: RedisSpec, first_host: int = 2) -> list[Node]:
        """Start the pods a larger spec adds (a new shard's StatefulSet)."""
        self.spec = spec
        added = [Node(self, index) for index in range(len(self.nodes), spec.pods)]
        self.nodes += added
        self.start(added, first_host)
        return added

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "REDIS_NODES": " ".join(node.address for node in self.nodes),
            "REDIS_MASTERS": str(self.spec.masters),
            "REDIS_REPLICAS": str(self.spec.replicas_per_master),
            "REDIS_NODES_FILE": str(self.members),
            "REDIS_TIMEOUT_SECONDS": str(BOOTSTRAP_TIMEOUT),
            "REDIS_PASSWORD_FILE": str(self.password_file),
            "TMPDIR": str(self.root),
        }

    def script(self, name: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run one of the kit's scripts as the pods' uid; its output is kept for the failure message."""
        return subprocess.run(
            as_uid(RUN_AS, ["sh", str(SCRIPTS / name)]),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def bootstrap(self) -> subprocess.CompletedProcess[str]:
        """Run cluster-bootstrap.sh as the Job does."""
        return self.script("cluster-bootstrap.sh", self.env(), BOOTSTRAP_HANG_SECONDS)

    def client(self) -> redis.RedisCluster:
        """A cluster client that follows announced hostnames, resolved to the nodes' current addresses."""
        by_host = {node.hostname: node for node in self.nodes}

        def remap(address: tuple[str, int]) -> tuple[str, int]:
            host, port = address
            return (by_host[host].ip, port) if host in by_host else (host, port)

        seed = self.running()[0]
        return redis.RedisCluster(
            host=seed.ip, port=self.port, password=PASSWORD, address_remap=remap, decode_responses=True
        )

    def running(self) -> list[Node]:
        """The nodes whose redis-server runs and is not paused."""
        return [node for node in self.nodes if node.process is not None and node.process.running and not node.paused]

    def replicas(self, master: Node) -> list[Node]:
        """The replicas of `master`, as the first running node sees them."""
        view = self.running()[0].nodes()
        master_id = next(key for key, entry in view.items() if entry["address"] == master.address)
        addresses = {entry["address"] for entry in view.values() if entry["master"] == master_id}
        return [node for node in self.nodes if node.address in addresses]

    def masters(self) -> dict[str, dict[str, object]]:
        """Masters holding slots, as the first running node sees them."""
        view = self.running()[0].nodes()
        return {key: entry for key, entry in view.items() if "master" in entry["flags"] and entry["slots"]}

    def owner(self, key: str) -> Node:
        """The node serving `key`'s slot now."""
        slot = key_slot(key.encode())
        by_address = {node.address: node for node in self.nodes}
        for entry in self.masters().values():
            for item in entry["slots"]:  # type: ignore[attr-defined]
                low, _, high = item.partition("-")
                if int(low) <= slot <= int(high or low):
                    return by_address[str(entry["address"])]
        raise AssertionError(f"slot {slot} of {key!r} has no master")

    def write_acknowledged(self, items: dict[str, str]) -> None:
        """Write each key on its master, then WAIT on that same connection until a replica has every write."""
        groups: dict[str, dict[str, str]] = {}
        owners = {}
        for key, value in items.items():
            owner = self.owner(key)
            owners[owner.address] = owner
            groups.setdefault(owner.address, {})[key] = value
        for address, group in groups.items():
            with owners[address].client() as direct:
                for key, value in group.items():
                    direct.set(key, value)
                assert direct.wait(1, 5000) >= 1, f"no replica acknowledged the writes to {address}"

    def wait(self, condition: str, check: object, timeout: float) -> float:
        """Poll `check()` every 20 ms until true; the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                if check():  # type: ignore[operator]
                    return time.monotonic() - start
            except redis.RedisError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"not {condition} after {timeout} s")

    def fail_over(self, key: str) -> tuple[float, Node, str]:
        """SIGKILL the master of `key`; seconds until every survivor serves all slots again, the
        victim, and the ID of the replica that took over its slots (one of its replicas)."""
        victim = self.owner(key)
        view = self.running()[0].nodes()
        victim_id, victim_entry = next((i, entry) for i, entry in view.items() if entry["address"] == victim.address)
        replica_ids = [i for i, entry in view.items() if entry["master"] == victim_id]
        survivors = [node for node in self.running() if node is not victim]
        victim.process.kill()  # type: ignore[union-attr]

        def successor() -> str | None:
            now = survivors[0].nodes()
            taken = [i for i in replica_ids if "master" in now[i]["flags"] and now[i]["slots"] == victim_entry["slots"]]
            return taken[0] if taken else None

        def served_again() -> bool:
            for node in survivors:
                info = node.info()
                if info["cluster_state"] != "ok" or info["cluster_slots_ok"] != str(SLOTS):
                    return False
            return successor() is not None

        timeout = self.spec.node_timeout_ms / 1000 * 3 + 10
        elapsed = self.wait("served again", served_again, timeout=timeout)
        return elapsed, victim, str(successor())

    def close(self) -> None:
        """Stop every process and delete the cluster's directory."""
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def slot_count(slots: tuple[str, ...]) -> int:
    total = 0
    for item in slots:
        low, _, high = item.partition("-")
        total += int(high or low) - int(low) + 1
    return total
