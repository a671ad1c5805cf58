"""PostgreSQL for every phase: a native sidecar (phase 1), a single server (phase 2), a Patroni group (phase 3).

Objects of the main group, by name (shard groups use their own names: `GroupNames.of(group)`):

- Secret `postgres-credentials`: `username`, `password` (the app role), `replication-password`.
- ConfigMap `postgres-scripts`: the files of components/scripts/postgres, run by the pods.
- StatefulSet `postgres` + headless Service `postgres`: one server (`replicas: 0`), or, with
  replicas, 1 + `replicas` members run by Patroni (components/patroni.py), which elects the leader
  through the API server (ServiceAccount, Role and RoleBinding `postgres-patroni`, configuration in
  the ConfigMap `postgres-patroni`) and labels each pod `role=primary` or `role=replica`.
- Service `postgres-rw`: the writable server (the leader: ready pods labelled `role=primary`).
- Service `postgres-ro`: replicas that stream from the leader within the lag limit.
- Deployment + Service `pgbouncer`, ConfigMap `pgbouncer-config`: transaction pooling in front of
  both; database `<db>` goes to `postgres-rw`, `<db>_ro` to `postgres-ro`.

Passwords enter as parameters (`str` when rendering, Pulumi Outputs at deploy time) and are only
ever placed in the Secret's `stringData`; pods read them as files (`pods.secret_file`), never from
environment variables: `POSTGRES_PASSWORD_FILE`, `REPLICATION_PASSWORD_FILE`, `DATABASE_PASSWORD_FILE`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from components import patroni
from components.labels import Meta
from components.patroni import PatroniSpec
from components.pods import (
    Resources,
    config_map,
    container_security,
    exec_probe,
    http_probe,
    mount_secret_files,
    pod_security,
    secret_file_env,
    spread,
)
from components.settings import setting
from components.web import IMAGE_PATTERN

NAME = "postgres"
POOLER_NAME = "pgbouncer"
RW_SERVICE = "postgres-rw"
RO_SERVICE = "postgres-ro"
SCRIPTS_CONFIG_MAP = "postgres-scripts"
POOLER_CONFIG_MAP = "pgbouncer-config"
PORT = 5432
POOLER_PORT = 6432
MAJOR = 15
RUN_AS = 10002  # the image's entrypoint runs initdb under any uid (nss_wrapper gives it a name)
REPLICATION_USER = "replicator"
PASSWORD_KEY = "password"
REPLICATION_PASSWORD_KEY = "replication-password"

DATA_VOLUME = "pgdata"
DATA_DIR = "/var/lib/postgresql/data"
PGDATA = f"{DATA_DIR}/pgdata"  # a subdirectory: a fresh volume's root may hold lost+found
SOCKET_DIR = "/var/run/postgresql"
SCRIPTS_DIR = "/scripts"
INITDB_DIR = "/docker-entrypoint-initdb.d"
POOLER_CONFIG_DIR = "/etc/pgbouncer"
POOLER_AUTH_DIR = "/run/pgbouncer"
CLAIM_COMPONENT = "primary"
RUN_VOLUME = {"name": "pg-run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
"""Writable socket directory for the read-only root filesystem; pods running `postgres_sidecar` add it."""

SCRIPTS = Path(__file__).parent / "scripts" / "postgres"
IDENTIFIER = r"[a-z_][a-z0-9_]{0,62}"
STORAGE = r"[1-9][0-9]*(Mi|Gi|Ti)"
SIZE = r"[1-9][0-9]*(kB|MB|GB)"
MAX_REPLICAS = 5  # streaming read replicas per group, the most `replicas` allows
WAL_SENDERS = MAX_REPLICAS + 5  # one per replica, plus base backups (two each) and spare for tools
RESERVED_CONNECTIONS = 10  # superuser_reserved_connections (3), probes, migrations and operators


@dataclass(frozen=True)
class GroupNames:
    """The object names of one PostgresGroup, so several groups can share a namespace."""

    members: str
    """The StatefulSet and its headless Service; with Patroni, also its scope (`<members>-leader`, ...)."""
    pooler: str
    rw: str
    ro: str
    scripts: str
    pooler_config: str
    secret: str
    patroni: str
    """Patroni's ConfigMap, ServiceAccount, Role and RoleBinding."""

    @classmethod
    def of(cls, group: str) -> GroupNames:
        """`postgres` keeps the names phases 2-5 always had; another group `g` gets `g`, `g-rw`, `g-pooler`, ..."""
        if group == NAME:
            return cls(
                NAME, POOLER_NAME, RW_SERVICE, RO_SERVICE, SCRIPTS_CONFIG_MAP, POOLER_CONFIG_MAP,
                f"{NAME}-credentials", f"{NAME}-patroni",
            )  # fmt: skip
        suffixes = ("pooler", "rw", "ro", "scripts", "pooler-config", "credentials", "patroni")
        return cls(group, *(f"{group}-{suffix}" for suffix in suffixes))


MAIN = GroupNames.of(NAME)


@dataclass(frozen=True)
class ReplicationSpec:
    """Streaming replication: how far a replica may fall behind and still serve reads."""

    max_lag_bytes: int = setting(
        16 * 1024 * 1024,
        "a replica that has replayed this much less WAL than the leader wrote is taken out of postgres-ro",
        minimum=0,
        maximum=16 * 1024**3,
    )
    max_slot_wal_keep_mb: int = setting(
        256,
        "WAL the primary keeps for a disconnected replica's slot; beyond it the replica must be rebuilt",
        minimum=16,
        maximum=1024 * 1024,
    )
    hot_standby_feedback: bool = setting(
        True, "replicas tell the primary which rows their queries still read (fewer cancelled reads, more bloat)"
    )


@dataclass(frozen=True)
class PoolerSpec:
    """PgBouncer in front of the primary and the replicas (phase 3 turns it on)."""

    enabled: bool = setting(False, "run PgBouncer; the web tier then connects to it instead of Postgres")
    image: str = setting(
        "ghcr.io/cloudnative-pg/pgbouncer:1.22.1-16",
        "PgBouncer image, pinned (CloudNativePG's maintained Debian-based build)",
        pattern=IMAGE_PATTERN,
    )
    replicas: int = setting(2, "PgBouncer pods", minimum=1, maximum=10)
    pool_mode: Literal["transaction", "session"] = setting(
        "transaction", "transaction: a server connection is held only for a transaction's duration"
    )
    default_pool_size: int = setting(
        20, "server connections per database/user pair, per PgBouncer pod", minimum=1, maximum=5000
    )
    reserve_pool_size: int = setting(
        5, "extra server connections a pool may open when clients wait", minimum=0, maximum=5000
    )
    max_client_conn: int = setting(1000, "client connections each PgBouncer pod accepts", minimum=1, maximum=100_000)
    server_lifetime_seconds: int = setting(
        60,
        "server connections are closed after this long, so pools rebalance when postgres-ro changes",
        minimum=10,
        maximum=86_400,
    )
    max_prepared_statements: int = setting(
        100,
        "protocol-level prepared statements tracked per server connection in transaction mode (0: off)",
        minimum=0,
        maximum=10_000,
    )
    resources: Resources = setting(Resources, "requests and limits of the PgBouncer container")

    def problems(self) -> Iterator[tuple[str, str]]:
        if image_tag(self.image) == "latest":
            yield "image", f"must be pinned to an explicit version, got {self.image!r}"


@dataclass(frozen=True)
class PostgresSpec:
    """The database: image, credentials' names, storage, replicas and pooler."""

    image: str = setting(
        "postgres:15.18-bookworm", f"official postgres image, pinned; major {MAJOR}", pattern=IMAGE_PATTERN
    )
    database: str = setting("app", "database the service uses", pattern=IDENTIFIER)
    user: str = setting("app", "role the service logs in as; owns the database", pattern=IDENTIFIER)
    storage: str = setting("1Gi", "PersistentVolumeClaim size per member", pattern=STORAGE)
    storage_class: str = setting(
        "", "StorageClass of the claims; empty: the cluster's default", pattern=r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?"
    )
    resources: Resources = setting(Resources, "requests and limits of each Postgres container")
    max_connections: int = setting(100, "server connections each member accepts", minimum=20, maximum=5000)
    shared_buffers: str = setting("32MB", "shared buffer cache; keep well under the memory limit", pattern=SIZE)
    replicas: int = setting(
        0, "streaming read replicas; with any, Patroni runs the group (phase 3: 2)", minimum=0, maximum=MAX_REPLICAS
    )
    replication: ReplicationSpec = setting(ReplicationSpec, "replica lag limits and WAL retention")
    ha: PatroniSpec = setting(PatroniSpec, "automatic failover of a group with replicas (Patroni)")
    pooler: PoolerSpec = setting(PoolerSpec, "PgBouncer")

    def problems(self) -> Iterator[tuple[str, str]]:
        if not re.match(rf"{MAJOR}(\.|-|$)", image_tag(self.image)):
            yield "image", f"must be PostgreSQL {MAJOR} (the scripts are tested on it), got {self.image!r}"
        if self.user in (REPLICATION_USER, "postgres"):
            yield "user", f"must not be 'postgres' or {REPLICATION_USER!r} (reserved), got {self.user!r}"
        storage_mb = mebibytes(self.storage)
        if self.replication.max_slot_wal_keep_mb * 2 > storage_mb:
            yield (
                "replication.max_slot_wal_keep_mb",
                f"must be at most half of storage ({self.storage} = {storage_mb} MiB), "
                f"got {self.replication.max_slot_wal_keep_mb}",
            )
        pooled = self.pooler.replicas * (self.pooler.default_pool_size + self.pooler.reserve_pool_size)
        if self.pooler.enabled and pooled > self.max_connections - RESERVED_CONNECTIONS:
            yield (
                "pooler.default_pool_size",
                f"pooler.replicas x (default_pool_size + reserve_pool_size) = {pooled} server connections "
                f"must fit in max_connections - {RESERVED_CONNECTIONS} = {self.max_connections - RESERVED_CONNECTIONS}",
            )


def image_tag(image: str) -> str:
    """The tag of `registry/name:tag[@digest]`."""
    return image.split("@", 1)[0].rsplit(":", 1)[-1]


def mebibytes(quantity: str) -> int:
    """A `STORAGE` quantity (`512Mi`, `1Gi`) in MiB."""
    number, unit = int(quantity[:-2]), quantity[-2:]
    return number * {"Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}[unit]


@dataclass(frozen=True)
class PostgresPasswords:
    """Generated credentials: `str` when rendering, Pulumi Outputs at deploy time (Secret stringData only).

    They are substituted into DSNs unescaped, so they must be URL-safe (letters and digits).
    """

    app: Any
    replication: Any


@dataclass(frozen=True)
class Address:
    """Where one database is reached: host, port and database name."""

    host: str
    port: int
    database: str


@dataclass(frozen=True)
class PostgresEndpoints:
    """What the web tier connects to; the password is read from `secret_name`/`password_key`."""

    primary: Address
    replicas: tuple[Address, ...]
    user: str
    secret_name: str
    password_key: str


def secret_name(meta: Meta) -> str:
    """The credentials Secret: one per stack namespace, so the name does not depend on `meta`."""
    del meta
    return MAIN.secret


def script(name: str) -> str:
    """The text of components/scripts/postgres/`name`."""
    return (SCRIPTS / name).read_text()


def script_names() -> list[str]:
    return sorted(path.name for path in SCRIPTS.glob("*.sh"))


def checksum(files: dict[str, str]) -> str:
    """sha256 over the names and contents of a ConfigMap's files: any change, renames included, changes it."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]}\0".encode())
    return digest.hexdigest()


def scripts_checksum() -> dict[str, str]:
    """The pod annotation that rolls the pods running the scripts when any of them changes."""
    return {"checksum/scripts": checksum({name: script(name) for name in script_names()})}


def server_settings(spec: PostgresSpec) -> dict[str, str]:
    """Server parameters of every member (primary and replicas alike), passed as `-c key=value`.

    None depends on `replicas`: the WAL senders and slots are sized for the most replicas the
    setting allows, because changing them needs a restart, and adding a replica must not restart
    the primary (or the standbys, whose values may not be lower than the primary's)."""
    return {
        "max_connections": str(spec.max_connections),
        "shared_buffers": spec.shared_buffers,
        "password_encryption": "scram-sha-256",
        "wal_level": "replica",
        "max_wal_senders": str(WAL_SENDERS),
        "max_replication_slots": str(WAL_SENDERS),
        "max_slot_wal_keep_size": f"{spec.replication.max_slot_wal_keep_mb}MB",
        "hot_standby": "on",
        "hot_standby_feedback": "on" if spec.replication.hot_standby_feedback else "off",
        "wal_receiver_status_interval": "1s",
    }


def _settings_args(settings: dict[str, str]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]


def credentials_secret(
    meta: Meta, spec: PostgresSpec, passwords: PostgresPasswords, names: GroupNames = MAIN
) -> dict[str, Any]:
    """Secret `postgres-credentials`: app user name and password, replication password."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta.metadata(names.members, "database", object_name=names.secret),
        "type": "Opaque",
        "stringData": {
            "username": spec.user,
            PASSWORD_KEY: passwords.app,
            REPLICATION_PASSWORD_KEY: passwords.replication,
        },
    }


def _client_env(spec: PostgresSpec) -> list[dict[str, Any]]:
    """libpq variables naming the local server over its socket: what probes and scripts connect to."""
    return [
        {"name": "PGHOST", "value": SOCKET_DIR},
        {"name": "PGPORT", "value": str(PORT)},
        {"name": "PGUSER", "value": spec.user},
        {"name": "PGDATABASE", "value": spec.database},
    ]


def _postgres_container(
    spec: PostgresSpec,
    secret: str,
    *,
    readiness: dict[str, Any],
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    """postgres-start.sh running `postgres` with the spec's settings.

    `secret`: the credentials an empty data directory is initialised with (the app role's password
    from its file).
    """
    return {
        "name": NAME,
        "image": spec.image,
        "command": [f"{SCRIPTS_DIR}/postgres-start.sh"],
        "args": _settings_args(server_settings(spec)),
        "ports": [{"name": "postgres", "containerPort": PORT}],
        "env": [
            {"name": "PGDATA", "value": PGDATA},
            {"name": "POSTGRES_USER", "value": spec.user},
            {"name": "POSTGRES_DB", "value": spec.database},
            secret_file_env("POSTGRES_PASSWORD_FILE", secret, PASSWORD_KEY),
            *_client_env(spec),
            *env,
        ],
        "resources": spec.resources.render(),
        # over TCP: the entrypoint's temporary initdb-time server listens on the socket only, so it
        # never passes; crash recovery may replay WAL before the server accepts connections: 5 minutes
        "startupProbe": exec_probe(["pg_isready", "-q", "-h", "127.0.0.1"], period=2, failure_threshold=150),
        "readinessProbe": readiness,
        # restarted only when the server has not answered at all for a minute
        "livenessProbe": exec_probe(["pg_isready", "-q"], period=10, failure_threshold=6),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": DATA_DIR},
            {"name": RUN_VOLUME["name"], "mountPath": SOCKET_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            _scripts_mount(),
            *mounts,
        ],
    }


def initdb_volume(scripts_map: str, *, replication_role: bool) -> dict[str, Any]:
    """The hooks the image's entrypoint runs after initdb, from the scripts ConfigMap, in name order.

    `10-primary-init.sh` (executable, run) creates the replication role when `replication_role`;
    `99-forget-password.sh` (not executable, so the entrypoint sources it) takes the password out of
    the entrypoint's environment before it starts the server.
    """
    items = [{"key": "forget-password.sh", "path": "99-forget-password.sh", "mode": 0o444}]
    if replication_role:
        items.insert(0, {"key": "primary-init.sh", "path": "10-primary-init.sh", "mode": 0o555})
    return {"name": "initdb", "configMap": {"name": scripts_map, "items": items}}


INITDB_MOUNT = {"name": "initdb", "mountPath": INITDB_DIR, "readOnly": True}


def postgres_sidecar(spec: PostgresSpec, secret_name: str) -> dict[str, Any]:
    """Phase 1: Postgres as a native sidecar of the web pod (the web container reaches it on 127.0.0.1).

    The kubelet starts it first and waits for its startup probe (pg_isready) before the next init
    container and the web container start. The pod must provide the volumes `pgdata` (the data
    claim), `tmp` (an emptyDir), `RUN_VOLUME` (the socket directory) and `sidecar_volumes()`.
    """
    container = _postgres_container(
        spec,
        secret_name,
        # ready when the app role can run a query in its database
        readiness=exec_probe(["psql", "-XAtq", "-c", "SELECT 1"], period=5, failure_threshold=2),
        env=[],
        mounts=[INITDB_MOUNT],
    )
    return {**container, "restartPolicy": "Always"}


def sidecar_volumes() -> list[dict[str, Any]]:
    """The scripts and initdb hooks `postgres_sidecar` mounts (from `scripts_config_map`)."""
    return [
        {"name": "scripts", "configMap": {"name": MAIN.scripts, "defaultMode": 0o555}},
        initdb_volume(MAIN.scripts, replication_role=False),
    ]


def local_endpoints(meta: Meta, spec: PostgresSpec) -> PostgresEndpoints:
    """Phase 1: the sidecar on localhost."""
    return PostgresEndpoints(
        primary=Address("127.0.0.1", PORT, spec.database),
        replicas=(),
        user=spec.user,
        secret_name=secret_name(meta),
        password_key=PASSWORD_KEY,
    )


def endpoints(meta: Meta, spec: PostgresSpec, names: GroupNames = MAIN) -> PostgresEndpoints:
    """Phase 2+: `postgres-rw` (and `postgres-ro`), or PgBouncer's `<db>` (and `<db>_ro`) when enabled."""
    del meta
    if spec.pooler.enabled:
        primary = Address(names.pooler, POOLER_PORT, spec.database)
        replicas = (Address(names.pooler, POOLER_PORT, f"{spec.database}_ro"),) if spec.replicas else ()
    else:
        primary = Address(names.rw, PORT, spec.database)
        replicas = (Address(names.ro, PORT, spec.database),) if spec.replicas else ()
    return PostgresEndpoints(primary, replicas, spec.user, names.secret, PASSWORD_KEY)


def database_env(endpoints: PostgresEndpoints) -> list[dict[str, Any]]:
    """DATABASE_URL (and DATABASE_REPLICA_URLS) without a password; the service reads it from the
    file DATABASE_PASSWORD_FILE names and puts it into each."""

    def url(address: Address) -> str:
        return f"postgresql://{endpoints.user}@{address.host}:{address.port}/{address.database}"

    env = [
        secret_file_env("DATABASE_PASSWORD_FILE", endpoints.secret_name, endpoints.password_key),
        {"name": "DATABASE_URL", "value": url(endpoints.primary)},
    ]
    if endpoints.replicas:
        env.append({"name": "DATABASE_REPLICA_URLS", "value": ",".join(url(a) for a in endpoints.replicas)})
    return env


def scripts_config_map(meta: Meta, names: GroupNames = MAIN) -> dict[str, Any]:
    """ConfigMap `postgres-scripts`: every components/scripts/postgres/*.sh, byte for byte."""
    metadata = meta.metadata(names.members, "database", object_name=names.scripts)
    return config_map(metadata, {name: script(name) for name in script_names()})


def _service(meta: Meta, name: str, component: str, selector: dict[str, str], *, headless: bool) -> dict[str, Any]:
    """A Service on 5432; headless ones list pods before they are ready (stable DNS during start-up)."""
    spec: dict[str, Any] = {
        "selector": selector,
        "ports": [{"name": "postgres", "port": PORT, "targetPort": "postgres", "protocol": "TCP"}],
    }
    if headless:
        spec = {"clusterIP": "None", "publishNotReadyAddresses": True, **spec}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta.metadata(name, component), "spec": spec}


def _stateful_set(
    meta: Meta,
    spec: PostgresSpec,
    names: GroupNames,
    component: str,
    replicas: int,
    pod_spec: dict[str, Any],
    annotations: dict[str, str],
) -> dict[str, Any]:
    """StatefulSet `names.members` with its claim template; `annotations` (checksums of what the pods
    read) roll the pods when they change."""
    name = names.members
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage}},
    }
    if spec.storage_class:
        claim_spec["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta.metadata(name, component),
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "selector": {"matchLabels": meta.selector(name)},
            "template": {
                "metadata": {"labels": meta.labels(name, component), "annotations": annotations},
                "spec": mount_secret_files(
                    {
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        # a fast shutdown checkpoints before exiting: restarts need no crash recovery
                        "terminationGracePeriodSeconds": 60,
                        "securityContext": pod_security(RUN_AS),
                        **pod_spec,
                        "volumes": [
                            {"name": "scripts", "configMap": {"name": names.scripts, "defaultMode": 0o555}},
                            RUN_VOLUME,
                            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                            *pod_spec.get("volumes", []),
                        ],
                    }
                ),
            },
            # Kubernetes never updates a claim template: its labels stay those phase 2 gave them, so
            # that a single server can become a group (and back) without replacing the StatefulSet
            "volumeClaimTemplates": [
                {"metadata": {"name": DATA_VOLUME, "labels": meta.labels(name, CLAIM_COMPONENT)}, "spec": claim_spec}
            ],
        },
    }


def _scripts_mount() -> dict[str, Any]:
    return {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True}


def _replication_env(secret: str) -> list[dict[str, Any]]:
    return [
        {"name": "REPLICATION_USER", "value": REPLICATION_USER},
        secret_file_env("REPLICATION_PASSWORD_FILE", secret, REPLICATION_PASSWORD_KEY),
    ]


def primary_objects(meta: Meta, spec: PostgresSpec, names: GroupNames = MAIN) -> list[dict[str, Any]]:
    """A single server (phase 2): StatefulSet `postgres` (one pod), headless Service `postgres`, `postgres-rw`.

    On first start the image's entrypoint runs initdb, then primary-init.sh (as an initdb hook):
    the replication role and its pg_hba entry, so that a Patroni group can later take over this data
    directory and stream it to replicas. Ready means "accepting writes" (ready.sh).
    """
    secret = names.secret
    container = _postgres_container(
        spec,
        secret,
        readiness=exec_probe([f"{SCRIPTS_DIR}/ready.sh"], period=5, failure_threshold=2),
        env=_replication_env(secret),
        mounts=[INITDB_MOUNT],
    )
    pod_spec = {"containers": [container], "volumes": [initdb_volume(names.scripts, replication_role=True)]}
    return [
        _stateful_set(meta, spec, names, "primary", 1, pod_spec, scripts_checksum()),
        _service(meta, names.members, "primary", meta.selector(names.members), headless=True),
        _service(meta, names.rw, "primary", meta.selector(names.members), headless=False),
    ]


def patroni_member(meta: Meta, spec: PostgresSpec, names: GroupNames) -> patroni.Member:
    """What Patroni's configuration takes from the group's settings."""
    return patroni.Member(
        scope=names.members,
        namespace=meta.namespace,
        labels=meta.selector(names.members),
        superuser=spec.user,
        replication_user=REPLICATION_USER,
        data_dir=PGDATA,
        bin_dir=f"/usr/lib/postgresql/{MAJOR}/bin",
        socket_dir=SOCKET_DIR,
        port=PORT,
        parameters=server_settings(spec),
        post_bootstrap=f"{SCRIPTS_DIR}/patroni-post-bootstrap.sh",
    )


def patroni_config_map(meta: Meta, names: GroupNames, document: dict[str, Any]) -> dict[str, Any]:
    """ConfigMap `postgres-patroni`: Patroni's configuration (no passwords), as `00-patroni.yml`."""
    metadata = meta.metadata(names.members, "database", object_name=names.patroni)
    return config_map(metadata, {patroni.CONFIG_FILE: yaml.safe_dump(document, sort_keys=False)})


def patroni_access(meta: Meta, names: GroupNames = MAIN) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding `postgres-patroni`: what Patroni does in the API server.

    Its leader lock, the group's configuration and history are annotations of ConfigMaps named
    after the group (`<group>-leader`, `-config`, `-sync`, `-failover`), which it creates; it reads
    and watches the group's pods and patches its own pod's labels and status annotation. Nothing
    else: no Secrets, no other kinds, no deletes.
    """
    metadata = meta.metadata(names.members, "database", object_name=names.patroni)
    rules = [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata, "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata, "rules": rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names.patroni},
            "subjects": [{"kind": "ServiceAccount", "name": names.patroni, "namespace": meta.namespace}],
        },
    ]


def patroni_container(spec: PostgresSpec, names: GroupNames) -> dict[str, Any]:
    """patroni-start.sh: Patroni runs Postgres, holds or follows the leader lock, labels the pod.

    Ready (`/readiness`) means: the leader, or a replica streaming within `replication.max_lag_bytes`
    of it. Live (`/liveness`) means Patroni's loop runs; Postgres itself is Patroni's to restart.
    """
    lag = spec.replication.max_lag_bytes
    return {
        "name": NAME,
        "image": spec.ha.image,
        "command": [f"{SCRIPTS_DIR}/patroni-start.sh"],
        "ports": [
            {"name": "postgres", "containerPort": PORT},
            {"name": "patroni", "containerPort": patroni.API_PORT},
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MEMBERS_HOST", "value": names.members},
            {"name": "POSTGRES_DB", "value": spec.database},
            secret_file_env("SUPERUSER_PASSWORD_FILE", names.secret, PASSWORD_KEY),
            secret_file_env("REPLICATION_PASSWORD_FILE", names.secret, REPLICATION_PASSWORD_KEY),
            *_client_env(spec),
        ],
        "resources": spec.resources.render(),
        # a replica's first start clones the leader, which takes as long as the data is big: 10 minutes
        "startupProbe": http_probe("/liveness", "patroni", period=2, failure_threshold=300),
        "readinessProbe": http_probe(f"/readiness?lag={lag}", "patroni", period=5, failure_threshold=2),
        "livenessProbe": http_probe("/liveness", "patroni", period=10, failure_threshold=6),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": DATA_DIR},
            {"name": RUN_VOLUME["name"], "mountPath": SOCKET_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            _scripts_mount(),
            {"name": "patroni-config", "mountPath": patroni.CONFIG_DIR, "readOnly": True},
            {"name": "patroni-run", "mountPath": patroni.RUN_DIR},
        ],
    }


def group_objects(meta: Meta, spec: PostgresSpec, names: GroupNames = MAIN) -> list[dict[str, Any]]:
    """A group with replicas: 1 + `replicas` members run by Patroni, `postgres-rw` and `postgres-ro`.

    Every member is alike: Patroni decides which one leads. The first to start initialises the
    group (initdb, then patroni-post-bootstrap.sh); the others clone it with pg_basebackup and stream
    from it through their own replication slot. On the leader's loss the most advanced replica within
    `ha.maximum_lag_on_failover` takes over, and the old leader rejoins as a replica (pg_rewind).
    """
    selector = meta.selector(names.members)
    document = patroni.configuration(patroni_member(meta, spec, names), spec.ha)
    pod_spec = {
        "serviceAccountName": names.patroni,
        "automountServiceAccountToken": True,
        "containers": [patroni_container(spec, names)],
        "topologySpreadConstraints": spread(selector),
        "volumes": [
            {"name": "patroni-config", "configMap": {"name": names.patroni}},
            {"name": "patroni-run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ],
    }
    # the members read only the local part of the configuration after the group exists; `bootstrap`
    # seeds a new group, so changing it must not restart (and fail over) a running one
    local = yaml.safe_dump({key: value for key, value in document.items() if key != "bootstrap"})
    annotations = {**scripts_checksum(), "checksum/patroni": checksum({patroni.CONFIG_FILE: local})}
    return [
        patroni_config_map(meta, names, document),
        *patroni_access(meta, names),
        _stateful_set(meta, spec, names, "database", 1 + spec.replicas, pod_spec, annotations),
        _service(meta, names.members, "database", selector, headless=True),
        _service(meta, names.rw, "primary", {**selector, patroni.ROLE_LABEL: patroni.PRIMARY}, headless=False),
        _service(meta, names.ro, "replica", {**selector, patroni.ROLE_LABEL: patroni.REPLICA}, headless=False),
        _disruption_budget(meta, names.members, "database"),
    ]


def _disruption_budget(meta: Meta, name: str, component: str) -> dict[str, Any]:
    """At most one pod of `name` evicted at a time (drains, node upgrades)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.metadata(name, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": meta.selector(name)}},
    }


def pgbouncer_ini(
    spec: PostgresSpec,
    *,
    primary: tuple[str, int],
    replica: tuple[str, int] | None,
    listen: tuple[str, int],
    auth_file: str,
) -> str:
    """pgbouncer.ini: database `<db>` on `primary`, `<db>_ro` on `replica`, SCRAM auth from `auth_file`."""
    pooler = spec.pooler
    databases = [f"{spec.database} = host={primary[0]} port={primary[1]} dbname={spec.database}"]
    if replica is not None:
        databases.append(f"{spec.database}_ro = host={replica[0]} port={replica[1]} dbname={spec.database}")
    settings = [
        ("listen_addr", listen[0]),
        ("listen_port", str(listen[1])),
        ("unix_socket_dir", ""),
        ("auth_type", "scram-sha-256"),
        ("auth_file", auth_file),
        ("pool_mode", pooler.pool_mode),
        ("max_client_conn", str(pooler.max_client_conn)),
        ("default_pool_size", str(pooler.default_pool_size)),
        ("reserve_pool_size", str(pooler.reserve_pool_size)),
        ("server_lifetime", str(pooler.server_lifetime_seconds)),
    ]
    if pooler.max_prepared_statements:
        settings.append(("max_prepared_statements", str(pooler.max_prepared_statements)))
    lines = [
        "; Rendered by scaleladder from the stack's postgres.pooler spec.",
        "[databases]",
        *databases,
        "",
        "[pgbouncer]",
        *(f"{key} = {value}" for key, value in settings),
    ]
    return "\n".join(lines) + "\n"


def _tcp_probe(port: str, *, period: int, failure_threshold: int) -> dict[str, Any]:
    return {
        "tcpSocket": {"port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failure_threshold,
    }


def pooler_objects(meta: Meta, spec: PostgresSpec, names: GroupNames = MAIN) -> list[dict[str, Any]]:
    """ConfigMap `pgbouncer-config`, Deployment and Service `pgbouncer` (+ PDB with 2+ pods).

    An init container (pgbouncer-userlist.sh, in the postgres image) writes the auth file from the
    Secret into an in-memory volume; PgBouncer then authenticates clients and servers with SCRAM.
    """
    auth_file = f"{POOLER_AUTH_DIR}/userlist.txt"
    ini = pgbouncer_ini(
        spec,
        primary=(names.rw, PORT),
        replica=(names.ro, PORT) if spec.replicas else None,
        listen=("0.0.0.0", POOLER_PORT),
        auth_file=auth_file,
    )
    selector = meta.selector(names.pooler)
    userlist = {
        "name": "userlist",
        "image": spec.image,
        "command": [f"{SCRIPTS_DIR}/pgbouncer-userlist.sh"],
        "env": [
            {"name": "POOLER_USER", "value": spec.user},
            secret_file_env("POOLER_PASSWORD_FILE", names.secret, PASSWORD_KEY),
            {"name": "AUTH_FILE", "value": auth_file},
        ],
        "resources": spec.pooler.resources.render(),
        "securityContext": container_security(),
        "volumeMounts": [_scripts_mount(), {"name": "auth", "mountPath": POOLER_AUTH_DIR}],
    }
    pgbouncer = {
        "name": POOLER_NAME,
        "image": spec.pooler.image,
        "command": ["pgbouncer", f"{POOLER_CONFIG_DIR}/pgbouncer.ini"],
        "ports": [{"name": "pgbouncer", "containerPort": POOLER_PORT}],
        "resources": spec.pooler.resources.render(),
        "startupProbe": _tcp_probe("pgbouncer", period=1, failure_threshold=30),
        "readinessProbe": _tcp_probe("pgbouncer", period=5, failure_threshold=2),
        "livenessProbe": _tcp_probe("pgbouncer", period=10, failure_threshold=3),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": POOLER_CONFIG_DIR, "readOnly": True},
            {"name": "auth", "mountPath": POOLER_AUTH_DIR, "readOnly": True},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.metadata(names.pooler, "pooler"),
        "spec": {
            "replicas": spec.pooler.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": meta.labels(names.pooler, "pooler"),
                    "annotations": {"checksum/config": hashlib.sha256(ini.encode()).hexdigest()},
                },
                "spec": mount_secret_files(
                    {
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "securityContext": pod_security(RUN_AS),
                        "initContainers": [userlist],
                        "containers": [pgbouncer],
                        "topologySpreadConstraints": spread(selector),
                        "volumes": [
                            {"name": "config", "configMap": {"name": names.pooler_config}},
                            {"name": "scripts", "configMap": {"name": names.scripts, "defaultMode": 0o555}},
                            {"name": "auth", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                        ],
                    }
                ),
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(names.pooler, "pooler"),
        "spec": {
            "selector": selector,
            "ports": [{"name": "pgbouncer", "port": POOLER_PORT, "targetPort": "pgbouncer", "protocol": "TCP"}],
        },
    }
    metadata = meta.metadata(names.pooler, "pooler", object_name=names.pooler_config)
    objects = [config_map(metadata, {"pgbouncer.ini": ini}), deployment, service]
    if spec.pooler.replicas > 1:
        objects.append(_disruption_budget(meta, names.pooler, "pooler"))
    return objects


def postgres_objects(
    meta: Meta, spec: PostgresSpec, passwords: PostgresPasswords, names: GroupNames = MAIN
) -> list[dict[str, Any]]:
    """Secret, scripts ConfigMap, and a single server or (with replicas) a Patroni group; PgBouncer
    when the spec asks."""
    objects = [
        credentials_secret(meta, spec, passwords, names),
        scripts_config_map(meta, names),
        *(group_objects(meta, spec, names) if spec.replicas else primary_objects(meta, spec, names)),
    ]
    if spec.pooler.enabled:
        objects += pooler_objects(meta, spec, names)
    return objects
