"""The Redis spec, its redis.conf renderer and the standalone session store's objects (`session-store`)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import kubernetes_validate
import pytest

from components.labels import Meta
from components.pods import Resources
from components.redis import (
    SCRIPTS,
    STANDALONE,
    RedisSpec,
    client_env,
    mebibytes,
    render_conf,
    standalone_objects,
)
from components.redis_cluster import cluster_objects
from components.settings import load

META = Meta(namespace="scaleladder-phase3", instance="phase3", version="0.1.0")
PASSWORD = "s3cret-session-password"


def problems(raw: dict[str, Any]) -> list[str]:
    spec, found = load(RedisSpec, raw, "redis")
    assert (spec is None) == bool(found)
    return [str(problem) for problem in found]


def directives(conf: str) -> dict[str, str]:
    lines = [line for line in conf.splitlines() if line and not line.startswith("#")]
    return dict(line.split(" ", 1) for line in lines)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def test_defaults_load_without_problems() -> None:
    assert problems({}) == []
    assert problems({"enabled": True, "mode": "cluster"}) == []


def test_cluster_mode_needs_three_masters() -> None:
    assert problems({"mode": "cluster", "masters": 2}) == [
        "scaleladder:redis.masters: must be >= 3 for cluster mode, got 2"
    ]
    # a standalone server ignores masters
    assert problems({"mode": "standalone", "masters": 2}) == []


def test_bad_values_name_the_key_the_value_and_what_is_allowed() -> None:
    assert problems({"mode": "sentinel", "eviction_policy": "lru", "persistence": "always"}) == [
        "scaleladder:redis.mode: must be one of 'standalone', 'cluster', got 'sentinel'",
        "scaleladder:redis.persistence: must be one of 'none', 'rdb', 'aof', got 'always'",
        "scaleladder:redis.eviction_policy: must be one of 'noeviction', 'volatile-lru', 'allkeys-lru', "
        "'volatile-lfu', 'allkeys-lfu', 'volatile-ttl', 'volatile-random', 'allkeys-random', got 'lru'",
    ]
    assert problems({"replicas_per_master": 6, "node_timeout_ms": 100}) == [
        "scaleladder:redis.replicas_per_master: must be <= 5, got 6",
        "scaleladder:redis.node_timeout_ms: must be >= 500, got 100",
    ]


def test_maxmemory_must_leave_headroom_below_the_memory_limit() -> None:
    assert problems({"maxmemory_mb": 256}) == [
        "scaleladder:redis.maxmemory_mb: must be below resources.memory_limit (256Mi = 256 MiB), got 256"
    ]
    assert problems({"maxmemory_mb": 900, "resources": {"memory_limit": "1Gi"}}) == []


def test_image_must_be_pinned() -> None:
    assert problems({"image": "redis:latest"}) == [
        "scaleladder:redis.image: must be pinned to an explicit tag, got 'redis:latest'"
    ]
    assert problems({"image": "redis"})[0].startswith("scaleladder:redis.image: must match ")


@pytest.mark.parametrize(("quantity", "mib"), [("256Mi", 256), ("1Gi", 1024), ("512Ki", 0.5), ("1048576", 1)])
def test_memory_quantities_in_mebibytes(quantity: str, mib: float) -> None:
    assert mebibytes(quantity) == mib


def test_standalone_conf_keeps_sessions_in_memory_by_default() -> None:
    conf = directives(render_conf(RedisSpec()))
    assert conf == {
        "port": "6379",
        "bind": "* -::*",
        "protected-mode": "yes",
        "logfile": '""',
        "tcp-keepalive": "60",
        "maxmemory": "192mb",
        "maxmemory-policy": "volatile-lru",
        "save": '""',
        "appendonly": "no",
        "appendfsync": "everysec",
    }


@pytest.mark.parametrize(
    ("mode", "persistence", "save", "appendonly"),
    [
        ("standalone", "rdb", "3600 1 300 100 60 10000", "no"),
        ("standalone", "aof", '""', "yes"),
        ("cluster", None, '""', "yes"),
        ("cluster", "none", '""', "no"),
    ],
)
def test_persistence_choices(mode: str, persistence: str | None, save: str, appendonly: str) -> None:
    conf = directives(render_conf(RedisSpec(mode=mode, persistence=persistence)))  # type: ignore[arg-type]
    assert (conf["save"], conf["appendonly"]) == (save, appendonly)


def test_conf_carries_no_password_and_extra_directives_follow() -> None:
    text = render_conf(RedisSpec(eviction_policy="allkeys-lfu", maxmemory_mb=100), [("cluster-enabled", "yes")])
    assert "requirepass" not in text and "masterauth" not in text
    assert text.splitlines()[-1] == "cluster-enabled yes"
    assert "maxmemory 100mb\nmaxmemory-policy allkeys-lfu\n" in text


def test_standalone_objects_in_order() -> None:
    objects = standalone_objects(META, RedisSpec(enabled=True), PASSWORD)
    assert [(obj["kind"], obj["metadata"]["name"]) for obj in objects] == [
        ("Secret", "redis-auth"),
        ("ConfigMap", "session-store-config"),
        ("ConfigMap", "session-store-scripts"),
        ("Service", "session-store-nodes"),
        ("Service", "session-store"),
        ("StatefulSet", "session-store"),
    ]
    for obj in objects:
        assert obj["metadata"]["namespace"] == "scaleladder-phase3"
        assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "session-store"


def test_standalone_objects_select_their_own_pods() -> None:
    objects = standalone_objects(META, RedisSpec(enabled=True), PASSWORD)
    selector = {"app.kubernetes.io/name": STANDALONE, "app.kubernetes.io/instance": "phase3"}
    nodes, client = by_kind(objects, "Service")
    assert nodes["spec"]["selector"] == client["spec"]["selector"] == selector
    (statefulset,) = by_kind(objects, "StatefulSet")
    assert statefulset["spec"]["serviceName"] == "session-store-nodes"
    assert statefulset["spec"]["selector"] == {"matchLabels": selector}
    assert statefulset["spec"]["template"]["metadata"]["labels"].items() >= selector.items()
    volumes = {volume["name"]: volume for volume in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "session-store-config"
    assert volumes["scripts"]["configMap"]["name"] == "session-store-scripts"


def test_standalone_and_cluster_run_side_by_side() -> None:
    """Climbing from phase 3 to 4 in place runs both: only the Secret is shared, no selector matches the other."""
    standalone = standalone_objects(META, RedisSpec(enabled=True), PASSWORD)
    cluster = cluster_objects(META, RedisSpec(enabled=True, mode="cluster"), PASSWORD)

    def names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(obj["kind"], obj["metadata"]["name"]) for obj in objects}

    assert names(standalone) & names(cluster) == {("Secret", "redis-auth")}

    def pod_labels(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
        return [obj["spec"]["template"]["metadata"]["labels"] for obj in by_kind(objects, "StatefulSet")]

    def selectors(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
        services = [obj["spec"]["selector"] for obj in by_kind(objects, "Service")]
        workloads = [obj for kind in ("StatefulSet", "PodDisruptionBudget") for obj in by_kind(objects, kind)]
        return services + [obj["spec"]["selector"]["matchLabels"] for obj in workloads]

    for mine, theirs in ((standalone, cluster), (cluster, standalone)):
        for selector in selectors(mine):
            assert not any(labels.items() >= selector.items() for labels in pod_labels(theirs)), selector


@pytest.mark.parametrize("persistence", ["none", "rdb", "aof"])
def test_standalone_objects_pass_strict_schema_validation(persistence: str) -> None:
    for obj in standalone_objects(META, RedisSpec(enabled=True, persistence=persistence), PASSWORD):  # type: ignore[arg-type]
        kubernetes_validate.validate(obj, "1.34.0", strict=True)


def test_password_is_only_in_the_secret() -> None:
    objects = standalone_objects(META, RedisSpec(enabled=True), PASSWORD)
    (secret,) = by_kind(objects, "Secret")
    assert secret["stringData"] == {"password": PASSWORD}
    assert all(PASSWORD not in json.dumps(obj) for obj in objects if obj is not secret)


def test_the_pod_runs_the_rendered_conf_through_node_start() -> None:
    spec = RedisSpec(enabled=True)
    objects = standalone_objects(META, spec, PASSWORD)
    config, scripts = by_kind(objects, "ConfigMap")
    assert config["data"] == {"redis.conf": render_conf(spec)}
    assert scripts["data"] == {"node-start.sh": (SCRIPTS / "node-start.sh").read_text()}
    (statefulset,) = by_kind(objects, "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "redis:7.0.15"
    assert container["command"] == ["sh", "/scripts/node-start.sh"]
    assert container["workingDir"] == "/data"
    assert {"name": "REDIS_PASSWORD_FILE", "value": "/run/secrets/redis-auth/password"} in container["env"]
    assert {"name": "secrets", "mountPath": "/run/secrets", "readOnly": True} in container["volumeMounts"]


def test_hardened_container_with_distinct_probes() -> None:
    (statefulset,) = by_kind(standalone_objects(META, RedisSpec(enabled=True), PASSWORD), "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10003
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"] == Resources().render()
    probes = [container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert len({json.dumps(probe, sort_keys=True) for probe in probes}) == 3
    assert "grep -Eqx 'PONG'" in container["readinessProbe"]["exec"]["command"][2]


def test_sessions_without_persistence_need_no_volume_claim() -> None:
    (ephemeral,) = by_kind(standalone_objects(META, RedisSpec(enabled=True), PASSWORD), "StatefulSet")
    assert "volumeClaimTemplates" not in ephemeral["spec"]
    assert {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}} in ephemeral["spec"]["template"]["spec"]["volumes"]
    spec = RedisSpec(enabled=True, persistence="aof", storage="5Gi")
    (durable,) = by_kind(standalone_objects(META, spec, PASSWORD), "StatefulSet")
    (claim,) = durable["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"] == {"requests": {"storage": "5Gi"}}
    assert all(volume["name"] != "data" for volume in durable["spec"]["template"]["spec"]["volumes"])


def test_a_changed_conf_rolls_the_pods() -> None:
    def checksum(spec: RedisSpec) -> str:
        (statefulset,) = by_kind(standalone_objects(META, spec, PASSWORD), "StatefulSet")
        return str(statefulset["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    spec = RedisSpec(enabled=True)
    assert checksum(spec) == checksum(spec)
    assert checksum(spec) != checksum(replace(spec, eviction_policy="allkeys-lru"))


def test_client_env_names_the_service_and_the_secret() -> None:
    assert client_env(RedisSpec(mode="cluster")) == [
        {"name": "REDIS_MODE", "value": "cluster"},
        {"name": "REDIS_PASSWORD_FILE", "value": "/run/secrets/redis-auth/password"},
        {"name": "REDIS_URL", "value": "redis://redis:6379"},
    ]
    assert client_env(RedisSpec())[2] == {"name": "REDIS_URL", "value": "redis://session-store:6379/0"}
