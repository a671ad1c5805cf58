"""Patroni: automatic failover for a Postgres group, with the Kubernetes API as its consensus store.

Each member runs Patroni as its container's entrypoint; Patroni runs Postgres. The leader holds a
lock in the API server (annotations of the ConfigMap `<group>-leader`, renewed every `loop_wait`
seconds, expiring after `ttl`), and labels its own pod `role=primary`; the others label themselves
`role=replica`, so Services select the leader and the replicas by label. A leader that cannot renew
the lock demotes itself before the lock can expire, so two writable primaries never coexist.

This module holds the settings and the configuration document (data, rendered to YAML); the
StatefulSet around it is built in components/postgres.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from components.settings import setting
from components.web import IMAGE_PATTERN

IMAGE_REPOSITORY = "scaleladder/postgres-patroni"
VERSION = "4.1.5"
API_PORT = 8008
CONFIG_DIR = "/etc/patroni"
CONFIG_FILE = "00-patroni.yml"
"""The kit's part of the configuration directory; Patroni merges its files in name order."""
RUN_DIR = "/run/patroni"
PGPASS = "/tmp/pgpass"
ROLE_LABEL = "role"
PRIMARY = "primary"
REPLICA = "replica"
SCOPE_LABEL = "app.kubernetes.io/name"
"""Patroni finds its members by the group's selector labels; the scope (the group's name) is the name label."""


@dataclass(frozen=True)
class PatroniSpec:
    """How fast a group fails over, and what it may lose doing so."""

    image: str = setting(
        f"{IMAGE_REPOSITORY}:15.18-{VERSION}",
        "Postgres + Patroni image built by the kit (images/postgres-patroni), pinned by tag",
        pattern=IMAGE_PATTERN,
    )
    ttl: int = setting(
        30,
        "seconds the leader lock lives unrenewed: a dead leader is replaced after at most this long "
        "(lower: faster failover, more risk of a needless one when the API server is slow)",
        minimum=20,
        maximum=600,
    )
    loop_wait: int = setting(
        10, "seconds between two runs of each member's loop (lock renewal, health checks)", minimum=1, maximum=60
    )
    retry_timeout: int = setting(
        10,
        "seconds a member retries the API server or Postgres before it gives up: a leader that cannot "
        "renew its lock within this demotes itself",
        minimum=3,
        maximum=300,
    )
    maximum_lag_on_failover: int = setting(
        1024 * 1024,
        "bytes of WAL a replica may be behind the last known leader position and still be promoted "
        "(higher: a failover happens in more cases, and may lose up to this much)",
        minimum=0,
        maximum=16 * 1024**3,
    )
    synchronous_mode: bool = setting(
        False,
        "commits wait until one replica has the WAL, so a failover loses no acknowledged transaction "
        "(costs one round trip per commit; phase 5 turns it on)",
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.image.endswith(":latest"):
            yield "image", f"must be pinned to an explicit tag, got {self.image!r}"
        needed = self.loop_wait + 2 * self.retry_timeout
        if needed > self.ttl:
            yield (
                "ttl",
                f"must be at least loop_wait + 2 x retry_timeout = {needed} (a leader must be able to retry "
                f"the API server before its lock expires), got {self.ttl}",
            )


@dataclass(frozen=True)
class Member:
    """What one group member's configuration needs from the kit's Postgres settings."""

    scope: str
    namespace: str
    labels: dict[str, str]
    superuser: str
    replication_user: str
    data_dir: str
    bin_dir: str
    socket_dir: str
    port: int
    parameters: dict[str, str]
    post_bootstrap: str


def pg_hba(replication_user: str) -> list[str]:
    """Socket connections are trusted (the pod's own tools); every TCP connection uses SCRAM."""
    return [
        "local all all trust",
        f"host replication {replication_user} all scram-sha-256",
        "host all all all scram-sha-256",
    ]


def configuration(member: Member, spec: PatroniSpec) -> dict[str, Any]:
    """Patroni's configuration without passwords, names or addresses (patroni-start.sh adds those).

    `bootstrap.dcs` seeds the cluster-wide settings in the API server when the group is first
    created; Patroni reads them from there afterwards (docs/postgres.md, "Changing a running group").
    """
    return {
        "scope": member.scope,
        "restapi": {"listen": f"0.0.0.0:{API_PORT}"},
        "kubernetes": {
            "namespace": member.namespace,
            "labels": member.labels,
            "scope_label": SCOPE_LABEL,
            "role_label": ROLE_LABEL,
            "leader_label_value": PRIMARY,
            "follower_label_value": REPLICA,
            "standby_leader_label_value": PRIMARY,
            "use_endpoints": False,
        },
        "bootstrap": {
            "dcs": {
                "ttl": spec.ttl,
                "loop_wait": spec.loop_wait,
                "retry_timeout": spec.retry_timeout,
                "maximum_lag_on_failover": spec.maximum_lag_on_failover,
                "synchronous_mode": spec.synchronous_mode,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": member.parameters,
                    "pg_hba": pg_hba(member.replication_user),
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
            "post_bootstrap": member.post_bootstrap,
        },
        "postgresql": {
            "listen": f"0.0.0.0:{member.port}",
            "data_dir": member.data_dir,
            "bin_dir": member.bin_dir,
            "pgpass": PGPASS,
            "use_unix_socket": True,
            "use_unix_socket_repl": False,
            "parameters": {"unix_socket_directories": member.socket_dir},
            "authentication": {
                "superuser": {"username": member.superuser},
                "replication": {"username": member.replication_user},
            },
            "basebackup": [{"checkpoint": "fast"}],
        },
    }
