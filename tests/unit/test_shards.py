"""The shard-group builders: names, the initial map, the service's env, the spec's errors, the stack wiring."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from sample.config import load_settings
from sample.shards import ShardMap, shard_settings

from components import config, patroni, postgres, shards
from components.labels import Meta
from components.settings import ConfigError, load
from components.stack import Secrets, build

META = Meta(namespace="ns", instance="test", version="0.0.0")


def passwords(group: str) -> postgres.PostgresPasswords:
    return postgres.PostgresPasswords(app=f"{group}-app-secret", replication=f"{group}-replication-secret")


POOLED = postgres.PostgresSpec(replicas=2, pooler=postgres.PoolerSpec(enabled=True))


def test_each_group_is_a_postgres_group_under_its_own_names() -> None:
    groups = shards.group_objects(META, shards.ShardsSpec(groups=2, replicas=1), POOLED, passwords)
    assert [name for name, _ in groups] == ["pg-shard-0", "pg-shard-1"]
    names = {(o["kind"], o["metadata"]["name"]) for o in groups[1][1]}
    assert names == {
        ("Secret", "pg-shard-1-credentials"),
        ("ConfigMap", "pg-shard-1-scripts"),
        ("ConfigMap", "pg-shard-1-patroni"),
        ("ServiceAccount", "pg-shard-1-patroni"),
        ("Role", "pg-shard-1-patroni"),
        ("RoleBinding", "pg-shard-1-patroni"),
        ("StatefulSet", "pg-shard-1"),
        ("Service", "pg-shard-1"),
        ("Service", "pg-shard-1-rw"),
        ("Service", "pg-shard-1-ro"),
        ("PodDisruptionBudget", "pg-shard-1"),
        ("Deployment", "pg-shard-1-pooler"),
        ("Service", "pg-shard-1-pooler"),
        ("ConfigMap", "pg-shard-1-pooler-config"),
        ("PodDisruptionBudget", "pg-shard-1-pooler"),
    }
    named = {(o["kind"], o["metadata"]["name"]): o for o in groups[1][1]}
    members = named[("StatefulSet", "pg-shard-1")]
    assert members["spec"]["replicas"] == 2  # the leader and shards.replicas replicas
    secret = named[("Secret", "pg-shard-1-credentials")]
    assert secret["stringData"]["password"] == "pg-shard-1-app-secret"  # each group its own credentials
    pod = members["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MEMBERS_HOST"] == "pg-shard-1"
    assert env["SUPERUSER_PASSWORD_FILE"] == "/run/secrets/pg-shard-1-credentials/password"
    assert pod["serviceAccountName"] == "pg-shard-1-patroni"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["patroni-config"]["configMap"]["name"] == "pg-shard-1-patroni"
    assert volumes["scripts"]["configMap"]["name"] == "pg-shard-1-scripts"
    binding = named[("RoleBinding", "pg-shard-1-patroni")]
    assert binding["roleRef"]["name"] == "pg-shard-1-patroni"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pg-shard-1-patroni", "namespace": "ns"}]
    # Patroni's scope is the group: each group elects its own leader, under its own lock
    document = yaml.safe_load(named[("ConfigMap", "pg-shard-1-patroni")]["data"][patroni.CONFIG_FILE])
    assert document["scope"] == "pg-shard-1"
    assert document["kubernetes"]["labels"] == META.selector("pg-shard-1")
    selector = members["spec"]["selector"]["matchLabels"]
    assert named[("Service", "pg-shard-1-rw")]["spec"]["selector"] == {**selector, "role": "primary"}
    assert named[("Service", "pg-shard-1-ro")]["spec"]["selector"] == {**selector, "role": "replica"}
    assert not any(name.startswith(("postgres", "pgbouncer")) for _, name in names)
    for _, objects in groups:
        for obj in objects:
            kubernetes_validate.validate(obj, "1.34.0", strict=True)


def test_initial_map_splits_logical_shards_evenly() -> None:
    shard_map = shards.initial_map(shards.ShardsSpec(groups=3, logical_shards=64))
    assert shard_map["version"] == 1 and shard_map["hash"] == shards.HASH
    assert shard_map["assignment"][:4] == ["pg-shard-0", "pg-shard-1", "pg-shard-2", "pg-shard-0"]
    assert Counter(shard_map["assignment"]) == {"pg-shard-0": 22, "pg-shard-1": 21, "pg-shard-2": 21}
    cm = shards.map_config_map(META, shards.ShardsSpec(groups=3, logical_shards=64))
    assert json.loads(cm["data"][shards.MAP_KEY]) == shard_map
    kubernetes_validate.validate(cm, "1.34.0", strict=True)


def test_service_env_names_each_group_through_its_pooler_and_secret() -> None:
    env = {e["name"]: e for e in shards.client_env(META, shards.ShardsSpec(), POOLED)}
    assert env["SHARD_GROUPS"]["value"] == "pg-shard-0,pg-shard-1"
    assert env["SHARD_MAP"]["valueFrom"] == {"configMapKeyRef": {"name": "shard-map", "key": "shard-map.json"}}
    assert env["SHARD_1_PASSWORD_FILE"]["value"] == "/run/secrets/pg-shard-1-credentials/password"
    assert env["SHARD_1_URL"]["value"] == "postgresql://app@pg-shard-1-pooler:6432/app"
    assert env["SHARD_1_REPLICA_URLS"]["value"] == "postgresql://app@pg-shard-1-pooler:6432/app_ro"


def test_migration_env_reaches_the_primaries_directly() -> None:
    env = {e["name"]: e.get("value") for e in shards.client_env(META, shards.ShardsSpec(), POOLED, direct=True)}
    assert env["SHARD_0_URL"] == "postgresql://app@pg-shard-0-rw:5432/app"
    assert "SHARD_0_REPLICA_URLS" not in env


def test_fewer_logical_shards_than_groups_is_an_error_naming_the_key() -> None:
    spec, problems = load(shards.ShardsSpec, {"groups": 4, "logical_shards": 3}, "shards")
    assert spec is None
    assert [str(p) for p in problems] == [
        "scaleladder:shards.logical_shards: must be at least groups (4) so every group owns one, got 3"
    ]
    _, problems = load(shards.ShardsSpec, {"groups": 17}, "shards")
    assert "scaleladder:shards.groups" in str(problems[0]) and "17" in str(problems[0])


def test_single_server_rejects_shards() -> None:
    with pytest.raises(ConfigError, match=r"scaleladder:shards.enabled: must be false when single_server is true"):
        config.from_values({"phase": 1, "shards": {"enabled": True}})


@pytest.mark.parametrize("phase", [2, 3, 4])
def test_phases_before_5_have_no_shards(phase: int) -> None:
    stack = build("p", config.from_values({"phase": phase}), Secrets.development())
    assert not any(part.name.startswith("pg-shard") for part in stack.parts)


def test_phase_5_runs_shard_groups_before_migrations_and_gives_web_the_env() -> None:
    stack = build("p", config.from_values({"phase": 5}), Secrets.development())
    parts = {part.name: part for part in stack.parts}
    assert {"pg-shard-0", "pg-shard-1", "shard-map"} <= set(parts)
    assert {"postgres", "pg-shard-0", "pg-shard-1", "shard-map"} <= set(parts["migrations"].depends_on)
    web_env = parts["web"].objects[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "SHARD_1_URL" in {e["name"] for e in web_env}


def test_the_service_reads_the_env_and_map_the_kit_renders(tmp_path: Path) -> None:
    """Contract: resolve the rendered env and mount the Secret files as the kubelet would (the
    projected volume under tmp_path); the service's loaders accept them and use the passwords."""
    stack = build("p", config.from_values({"phase": 5}), Secrets.development())
    objects = {(o["kind"], o["metadata"]["name"]): o for o in stack.objects()}
    pod = next(p for p in stack.parts if p.name == "web").objects[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = (m for m in container["volumeMounts"] if m["name"] == "secrets")
    (volume,) = (v for v in pod["volumes"] if v["name"] == "secrets")
    for source in volume["projected"]["sources"]:
        for item in source["secret"]["items"]:
            file = tmp_path / item["path"]
            file.parent.mkdir(exist_ok=True)
            file.write_text(objects[("Secret", source["secret"]["name"])]["stringData"][item["key"]])
    env: dict[str, str] = {}
    for variable in container["env"]:
        source = variable.get("valueFrom", {})
        assert "secretKeyRef" not in source
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[variable["name"]] = objects[("ConfigMap", ref["name"])]["data"][ref["key"]]
        else:
            env[variable["name"]] = variable["value"].replace(mount["mountPath"], str(tmp_path), 1)
    settings = shard_settings(env)
    assert settings is not None and settings.names() == ["pg-shard-0", "pg-shard-1"]
    shard_password = objects[("Secret", "pg-shard-1-credentials")]["stringData"]["password"]
    assert settings.groups[1].url == f"postgresql://app:{shard_password}@pg-shard-1-pooler:6432/app"
    service = load_settings(env)
    password = objects[("Secret", "postgres-credentials")]["stringData"]["password"]
    assert service.database_url == f"postgresql://app:{password}@pgbouncer:6432/app"
    redis_password = objects[("Secret", "redis-auth")]["stringData"]["password"]
    assert service.redis_url == f"redis://:{redis_password}@redis:6379"
    assert settings.initial_map == ShardMap.from_dict(shards.initial_map(shards.ShardsSpec(enabled=True)), "x")


def test_move_job_runs_the_move_with_the_migration_jobs_env_and_pod_labels() -> None:
    stack = build("p", config.from_values({"phase": 5}), Secrets.development())
    [migration] = next(p for p in stack.parts if p.name == "migrations").objects
    job = shards.move_job(migration, 26, "pg-shard-1")
    assert job["metadata"]["name"] == "shard-move-26-to-pg-shard-1"
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["shards", "move", "--logical", "26", "--to", "pg-shard-1"]
    assert container["env"] == migration["spec"]["template"]["spec"]["containers"][0]["env"]
    assert job["spec"]["template"]["metadata"] == migration["spec"]["template"]["metadata"]
    assert migration["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]  # not changed
    kubernetes_validate.validate(job, "1.34.0", strict=True)
