"""Redis: one spec and one redis.conf renderer for every Redis the kit runs, and the session store.

`RedisSpec` describes both modes: `standalone` (phase 3: one pod, the web tier's session store)
and `cluster` (phase 4: masters x replicas, see components/redis_cluster.py). Both render their
redis.conf with `render_conf` and start through components/scripts/redis/node-start.sh, which adds
the password (from a Secret, never in the ConfigMap) and any per-pod addressing given as arguments.
The integration tests start real redis-servers from exactly this text and these scripts.

The two modes' objects have different names (STANDALONE `session-store`, the cluster's NAME `redis`)
and pod labels, so that a stack climbing from phase 3 to 4 runs both side by side while the sessions
are copied over; only the Secret `redis-auth` (one password purpose) is shared.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from components.labels import Meta
from components.pods import (
    QUANTITY,
    Resources,
    config_map,
    container_security,
    exec_probe,
    mount_secret_files,
    pod_security,
    secret_file,
    secret_file_env,
)
from components.settings import setting

NAME = "redis"
"""The Redis Cluster's name (phase 4 and up): Services `redis` and `redis-nodes`, ConfigMaps
`redis-config` and `redis-scripts`, PDB `redis`, StatefulSets `redis-shard-<i>`, pod label
`app.kubernetes.io/name: redis`; also the Secret `redis-auth`, shared by both modes."""
STANDALONE = "session-store"
"""The standalone server's name (phase 3): Services `session-store` and `session-store-nodes`,
ConfigMaps `session-store-config` and `session-store-scripts`, StatefulSet `session-store`, pod label
`app.kubernetes.io/name: session-store`. It differs from NAME so that both can run side by side
while a stack climbs from phase 3 to 4 in place (sessions are copied from the standalone into the
cluster): no name and no selector of one matches the other's. The password (Secret `redis-auth`,
the same file in every pod) is the same purpose in both modes and stays shared."""
PORT = 6379
RUN_AS = 10003
"""Any uid runs the official image's redis-server: it writes only to its data and run volumes."""

SCRIPTS = Path(__file__).parent / "scripts" / "redis"
CONF_DIR = "/etc/redis"
SCRIPTS_DIR = "/scripts"
DATA_DIR = "/data"
RUN_DIR = "/run/redis"
SECRET_KEY = "password"
IMAGE_PATTERN = r"[a-z0-9./_-]+(:[0-9]+)?[a-z0-9./_-]*:[A-Za-z0-9_][A-Za-z0-9._-]*(@sha256:[a-f0-9]{64})?"

EvictionPolicy = Literal[
    "noeviction",
    "volatile-lru",
    "allkeys-lru",
    "volatile-lfu",
    "allkeys-lfu",
    "volatile-ttl",
    "volatile-random",
    "allkeys-random",
]
Persistence = Literal["none", "rdb", "aof"]

MEBIBYTES = {"": 1 / 2**20, "m": 1 / 1000 / 2**20, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024}


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity (`256Mi`, `1Gi`, bytes) in MiB."""
    match = re.fullmatch(QUANTITY, quantity)
    if match is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    unit = match.group(2) or ""
    return float(quantity[: len(quantity) - len(unit)]) * MEBIBYTES[unit]


@dataclass(frozen=True)
class RedisSpec:
    """Redis for sessions and cache: a standalone server (phase 3) or a Redis Cluster (phase 4)."""

    enabled: bool = setting(False, "deploy Redis (phase 3 on); the web tier keeps its sessions here")
    mode: Literal["standalone", "cluster"] = setting(
        "standalone", "standalone: one pod (phase 3 session store); cluster: Redis Cluster (phase 4)"
    )
    image: str = setting(
        "redis:7.0.15", "Redis image, pinned to the version the kit is tested with", pattern=IMAGE_PATTERN
    )
    masters: int = setting(3, "cluster mode: masters the 16384 hash slots are spread over", minimum=1, maximum=100)
    replicas_per_master: int = setting(
        1, "cluster mode: replicas of each master; a killed master's replica takes over", minimum=0, maximum=5
    )
    node_timeout_ms: int = setting(
        5000,
        "cluster mode: peers flag a node failing after this long without an answer; its replica takes over "
        "its slots just after it with failover_watch, a few seconds later without (bench/redis_failover.py "
        "measures how many)",
        minimum=500,
        maximum=60000,
    )
    failover_watch: bool = setting(
        True,
        "cluster mode: a failover-watch sidecar in every pod promotes a replica as soon as its master has "
        "been unreachable for the node timeout, once most masters confirm it, instead of Redis's own "
        "detection about half a node timeout + 1 s later (bench/redis_failover.py measures both); "
        "false: Redis alone decides",
    )
    anti_affinity: Literal["required", "preferred"] = setting(
        "required",
        "cluster mode: required: the pods of one shard (a master and its replicas) never share a node, so "
        "losing a node never takes a master with its replica (needs 1 + replicas_per_master schedulable "
        "nodes, else pods stay Pending); preferred: spread them when there are enough nodes (a one-node cluster)",
    )
    persistence: Persistence | None = setting(
        None,
        "none, rdb (snapshots) or aof (append-only file, fsync every second); unset: none in standalone "
        "mode (sessions are cheap to lose, restarts are instant), aof in cluster mode (a master restarted "
        "before its failover must come back with its data, or its replica copies the empty set)",
    )
    maxmemory_mb: int = setting(
        192,
        "MiB of data before the eviction policy acts; keep headroom below the memory limit",
        minimum=1,
        maximum=65_536,
    )
    eviction_policy: EvictionPolicy = setting(
        "volatile-lru",
        "what goes when maxmemory is reached; volatile-lru: the least recently used key that has a TTL "
        "(sessions and cache entries carry one), keys without a TTL are never evicted",
    )
    storage: str = setting(
        "1Gi", "data volume of each pod (persistence files; nodes.conf in cluster mode)", pattern=QUANTITY
    )
    resources: Resources = setting(Resources, "requests and limits of each Redis container")

    @property
    def effective_persistence(self) -> Persistence:
        if self.persistence is not None:
            return self.persistence
        return "aof" if self.mode == "cluster" else "none"

    @property
    def pods(self) -> int:
        return self.masters * (1 + self.replicas_per_master) if self.mode == "cluster" else 1

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.mode == "cluster" and self.masters < 3:
            yield "masters", f"must be >= 3 for cluster mode, got {self.masters}"
        if self.image.endswith(":latest"):
            yield "image", f"must be pinned to an explicit tag, got {self.image!r}"
        limit = mebibytes(self.resources.memory_limit)
        if self.maxmemory_mb >= limit:
            yield (
                "maxmemory_mb",
                f"must be below resources.memory_limit ({self.resources.memory_limit} = {limit:g} MiB), "
                f"got {self.maxmemory_mb}",
            )


def render_conf(spec: RedisSpec, extra: Sequence[tuple[str, str]] = ()) -> str:
    """redis.conf for `spec`; `extra` directives (cluster settings) follow the common ones."""
    persistence = spec.effective_persistence
    directives = [
        ("port", str(PORT)),
        # every interface (IPv6 optional); node-start.sh arguments override it on loopback
        ("bind", "* -::*"),
        ("protected-mode", "yes"),
        ("logfile", '""'),
        ("tcp-keepalive", "60"),
        ("maxmemory", f"{spec.maxmemory_mb}mb"),
        ("maxmemory-policy", spec.eviction_policy),
        ("save", "3600 1 300 100 60 10000" if persistence == "rdb" else '""'),
        ("appendonly", "yes" if persistence == "aof" else "no"),
        ("appendfsync", "everysec"),
        *extra,
    ]
    header = "# Rendered by scaleladder from the stack's redis spec; the password comes from node-start.sh.\n"
    return header + "".join(f"{key} {value}\n" for key, value in directives)


def script(name: str) -> str:
    """The text of components/scripts/redis/`name`."""
    return (SCRIPTS / name).read_text()


def auth_secret(meta: Meta, component: str, password: Any) -> dict[str, Any]:
    """The password every node requires and every client sends; `password` may be a Pulumi Output."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta.metadata(NAME, component, object_name=f"{NAME}-auth"),
        "type": "Opaque",
        "stringData": {SECRET_KEY: password},
    }


PASSWORD_FILE = secret_file(f"{NAME}-auth", SECRET_KEY)


def password_file_env(name: str = "REDIS_PASSWORD_FILE") -> dict[str, Any]:
    """Env var `name` naming the password's file; the pod mounts it (`pods.mount_secret_files`)."""
    return secret_file_env(name, f"{NAME}-auth", SECRET_KEY)


def cli_probe(expect: str, *, period: int, failure_threshold: int) -> dict[str, Any]:
    """Exec probe: `redis-cli ping`, the password from its file, must answer with `expect` (a regex)."""
    command = f"REDISCLI_AUTH=$(cat {PASSWORD_FILE}) redis-cli -p {PORT} ping | grep -Eqx '{expect}'"
    return exec_probe(["sh", "-c", command], period=period, failure_threshold=failure_threshold)


def node_container(spec: RedisSpec, args: Sequence[str] = (), env: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """redis-server started by node-start.sh; `args` are per-pod redis.conf overrides."""
    return {
        "name": "redis",
        "image": spec.image,
        "command": ["sh", f"{SCRIPTS_DIR}/node-start.sh", *args],
        # redis.conf names no `dir`: data files go to the working directory, the data volume
        "workingDir": DATA_DIR,
        "env": [
            password_file_env(),
            {"name": "REDIS_CONFIG", "value": f"{CONF_DIR}/redis.conf"},
            {"name": "REDIS_RUN_DIR", "value": RUN_DIR},
            *env,
        ],
        "ports": [{"name": "redis", "containerPort": PORT}],
        "resources": spec.resources.render(),
        # loading an AOF or RDB answers LOADING: allowed for up to 5 minutes before liveness counts
        "startupProbe": cli_probe("PONG|LOADING.*", period=2, failure_threshold=150),
        # out of the Service while loading or when the server stops answering for 10 s
        "readinessProbe": cli_probe("PONG", period=5, failure_threshold=2),
        # restarted only when the process answers nothing for 30 s
        "livenessProbe": cli_probe("PONG|LOADING.*", period=10, failure_threshold=3),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONF_DIR, "readOnly": True},
            {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "run", "mountPath": RUN_DIR},
        ],
    }


def files_config_maps(
    meta: Meta, component: str, config: dict[str, str], scripts: Sequence[str], *, name: str = NAME
) -> list[dict[str, Any]]:
    """`<name>-config` (redis.conf, ...) and `<name>-scripts` (the named files of components/scripts/redis)."""
    return [
        config_map(meta.metadata(name, component, object_name=f"{name}-config"), config),
        config_map(
            meta.metadata(name, component, object_name=f"{name}-scripts"), {file: script(file) for file in scripts}
        ),
    ]


def pod_volumes(spec: RedisSpec, *, name: str = NAME) -> list[dict[str, Any]]:
    """ConfigMaps `<name>-config` and `<name>-scripts`, the in-memory run dir for the password file,
    and /data when it needs no claim."""
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"{name}-config"}},
        {"name": "scripts", "configMap": {"name": f"{name}-scripts", "defaultMode": 0o555}},
        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]
    if not needs_claim(spec):
        volumes.append({"name": "data", "emptyDir": {"sizeLimit": spec.storage}})
    return volumes


def needs_claim(spec: RedisSpec) -> bool:
    """Persistent files (RDB/AOF, a cluster node's identity in nodes.conf) need a volume that outlives the pod."""
    return spec.mode == "cluster" or spec.effective_persistence != "none"


def headless_service(meta: Meta, component: str, *, name: str = NAME) -> dict[str, Any]:
    """`<name>-nodes`: stable DNS names per pod (`redis-shard-0-0.redis-nodes`), listed before they are ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(name, component, object_name=f"{name}-nodes"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": meta.selector(name),
            "ports": [{"name": "redis", "port": PORT, "targetPort": "redis", "protocol": "TCP"}],
        },
    }


def client_service(meta: Meta, component: str, *, name: str = NAME) -> dict[str, Any]:
    """`<name>`: what clients connect to (cluster clients use it as their seed), ready pods only."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(name, component),
        "spec": {
            "selector": meta.selector(name),
            "ports": [{"name": "redis", "port": PORT, "targetPort": "redis", "protocol": "TCP"}],
        },
    }


def stateful_set(
    meta: Meta,
    spec: RedisSpec,
    component: str,
    conf: str,
    pod_spec: dict[str, Any],
    *,
    name: str = NAME,
    object_name: str | None = None,
    replicas: int = 1,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """StatefulSet `object_name` (default: `name`) of `replicas` Redis pods labelled `name`, behind the
    headless Service `<name>-nodes`; a changed redis.conf rolls them (checksum annotation).

    `labels` are added to the pods' labels and to the selector: they tell several StatefulSets
    behind one headless Service apart (a Redis Cluster's shards).
    """
    extra = labels or {}
    statefulset_spec: dict[str, Any] = {
        "serviceName": f"{name}-nodes",
        "replicas": replicas,
        "selector": {"matchLabels": {**meta.selector(name), **extra}},
        "podManagementPolicy": "Parallel",
        "template": {
            "metadata": {
                "labels": {**meta.labels(name, component), **extra},
                "annotations": {"checksum/config": hashlib.sha256(conf.encode()).hexdigest()},
            },
            "spec": mount_secret_files(
                {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(RUN_AS),
                    "terminationGracePeriodSeconds": 30,
                    **pod_spec,
                }
            ),
        },
    }
    if needs_claim(spec):
        statefulset_spec["volumeClaimTemplates"] = [
            {
                "metadata": {"name": "data", "labels": meta.labels(name, component)},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": spec.storage}}},
            }
        ]
    metadata = meta.metadata(name, component, object_name=object_name)
    metadata["labels"].update(extra)
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata, "spec": statefulset_spec}


def standalone_objects(meta: Meta, spec: RedisSpec, password: Any) -> list[dict[str, Any]]:
    """The phase-3 session store, named STANDALONE: the shared Secret `redis-auth`, ConfigMaps
    `session-store-config` and `session-store-scripts`, Services `session-store` and
    `session-store-nodes`, one-pod StatefulSet `session-store`."""
    component = "session-store"
    conf = render_conf(spec)
    pod_spec = {"containers": [node_container(spec)], "volumes": pod_volumes(spec, name=STANDALONE)}
    return [
        auth_secret(meta, component, password),
        *files_config_maps(meta, component, {"redis.conf": conf}, ["node-start.sh"], name=STANDALONE),
        headless_service(meta, component, name=STANDALONE),
        client_service(meta, component, name=STANDALONE),
        stateful_set(meta, spec, component, conf, pod_spec, name=STANDALONE),
    ]


def client_env(spec: RedisSpec) -> list[dict[str, Any]]:
    """The sample service's REDIS_MODE, REDIS_URL and REDIS_PASSWORD_FILE, whose password the service
    puts into the URL. REDIS_URL names the client Service: `session-store` (database 0) in standalone
    mode, `redis` (a cluster client's seed) in cluster mode."""
    host, path = (NAME, "") if spec.mode == "cluster" else (STANDALONE, "/0")
    return [
        {"name": "REDIS_MODE", "value": spec.mode},
        password_file_env(),
        {"name": "REDIS_URL", "value": f"redis://{host}:{PORT}{path}"},
    ]
