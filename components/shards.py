"""Postgres shard groups (phase 5): user-scoped rows spread over N PostgresGroups by a shard map.

Objects, by name:

- one PostgresGroup per shard group `pg-shard-<i>` (components/postgres.py with `GroupNames.of`):
  `pg-shard-<i>` (its members, run by Patroni when it has replicas), `pg-shard-<i>-rw`,
  `pg-shard-<i>-ro`, `pg-shard-<i>-pooler`, `pg-shard-<i>-credentials`, `pg-shard-<i>-patroni`, ...
- ConfigMap `shard-map`, key `shard-map.json`: the initial shard map (version 1). `sample migrate`
  seeds the main group's `shard_map` table from it; later versions (moves) live in that table.

The algorithm (docs/shards.md): logical = first 4 bytes of sha256(user id as 8-byte big-endian
two's complement), read as an unsigned integer, mod `logical_shards`; the map sends each logical
shard to a group. Logical shard l starts on group l mod `groups`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from components.labels import Meta
from components.postgres import (
    MAX_REPLICAS,
    PORT,
    GroupNames,
    PostgresPasswords,
    PostgresSpec,
    database_env,
    endpoints,
    postgres_objects,
)
from components.settings import setting

GROUP_PREFIX = "pg-shard-"
MAP_CONFIG_MAP = "shard-map"
MAP_KEY = "shard-map.json"
HASH = "sha256-int8be-u32"
"""Names the hash in the map: sha256 of the id's 8 big-endian bytes, first 4 bytes unsigned."""
MAX_LOGICAL_SHARDS = 1024


@dataclass(frozen=True)
class ShardsSpec:
    """Shard groups for user-scoped data (users and their orders); the catalog stays in the main group."""

    enabled: bool = setting(False, "run shard groups and route user-scoped queries by user id (phase 5 on)")
    groups: int = setting(
        2, "shard groups pg-shard-0 .. pg-shard-<groups-1>, each a PostgresGroup", minimum=1, maximum=16
    )
    logical_shards: int = setting(
        64,
        "fixed number of logical shards users hash into; moving one moves 1/logical_shards of the users",
        minimum=1,
        maximum=MAX_LOGICAL_SHARDS,
    )
    replicas: int = setting(
        1,
        "streaming read replicas per shard group (the main group's postgres.replicas is its own)",
        minimum=0,
        maximum=MAX_REPLICAS,
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.logical_shards < self.groups:
            yield (
                "logical_shards",
                f"must be at least groups ({self.groups}) so every group owns one, got {self.logical_shards}",
            )


def group_name(index: int) -> str:
    return f"{GROUP_PREFIX}{index}"


def group_names(spec: ShardsSpec) -> list[str]:
    return [group_name(i) for i in range(spec.groups)]


def group_spec(spec: ShardsSpec, main: PostgresSpec) -> PostgresSpec:
    """A shard group is the main group's spec (image, user, database, pooler) with its own replica count."""
    return dataclasses.replace(main, replicas=spec.replicas)


def initial_map(spec: ShardsSpec) -> dict[str, Any]:
    """Version 1 of the shard map: logical shard l on group l mod groups (an even split)."""
    names = group_names(spec)
    return {
        "version": 1,
        "hash": HASH,
        "logical_shards": spec.logical_shards,
        "groups": names,
        "assignment": [names[logical % spec.groups] for logical in range(spec.logical_shards)],
    }


def map_config_map(meta: Meta, spec: ShardsSpec) -> dict[str, Any]:
    """ConfigMap `shard-map` holding `initial_map` as JSON."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta.metadata(MAP_CONFIG_MAP, "shard-map"),
        "data": {MAP_KEY: json.dumps(initial_map(spec), indent=1) + "\n"},
    }


def group_objects(
    meta: Meta, spec: ShardsSpec, main: PostgresSpec, passwords: Callable[[str], PostgresPasswords]
) -> list[tuple[str, list[dict[str, Any]]]]:
    """(group name, objects) per shard group: each a full PostgresGroup under its own names, with
    its own credentials (`passwords(group)`)."""
    shard = group_spec(spec, main)
    return [(name, postgres_objects(meta, shard, passwords(name), GroupNames.of(name))) for name in group_names(spec)]


def client_env(meta: Meta, spec: ShardsSpec, main: PostgresSpec, *, direct: bool = False) -> list[dict[str, Any]]:
    """The service's shard settings: SHARD_MAP (from the ConfigMap), SHARD_GROUPS, and per group i
    SHARD_<i>_PASSWORD_FILE (its Secret's file), SHARD_<i>_URL, SHARD_<i>_REPLICA_URLS when it has replicas.

    `direct`: URLs of the primaries themselves (`pg-shard-<i>-rw:5432`, no replicas), for the
    migration Job, whose advisory locks need a session a transaction pooler does not keep.
    """
    env: list[dict[str, Any]] = [
        {"name": "SHARD_MAP", "valueFrom": {"configMapKeyRef": {"name": MAP_CONFIG_MAP, "key": MAP_KEY}}},
        {"name": "SHARD_GROUPS", "value": ",".join(group_names(spec))},
    ]
    shard = group_spec(spec, main)
    for index, name in enumerate(group_names(spec)):
        names = GroupNames.of(name)
        found = endpoints(meta, shard, names)
        if direct:
            found = dataclasses.replace(
                found, primary=dataclasses.replace(found.primary, host=names.rw, port=PORT), replicas=()
            )
        prefix = f"SHARD_{index}_"
        env += ({**v, "name": v["name"].replace("DATABASE_", prefix, 1)} for v in database_env(found))
    return env


def move_job(migration_job: dict[str, Any], logical: int, to: str) -> dict[str, Any]:
    """A Job running `sample shards move --logical N --to GROUP`, made from the stack's migration Job.

    It keeps that Job's image, env (the primaries themselves, which a move needs for its session
    locks) and pod labels, so the stack's NetworkPolicies already let it reach every group. A move
    that failed is safe to run again, hence a few retries.
    """
    job = copy.deepcopy(migration_job)
    job["metadata"]["name"] = f"shard-move-{logical}-to-{to}"
    job["spec"]["backoffLimit"] = 2
    [container] = job["spec"]["template"]["spec"]["containers"]
    container["name"] = "shard-move"
    container["args"] = ["shards", "move", "--logical", str(logical), "--to", to]
    return job
