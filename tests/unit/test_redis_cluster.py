"""The Redis Cluster's objects: a StatefulSet per shard, rejoin and failover-watch containers, PDB,
anti-affinity and bootstrap Job."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import kubernetes_validate
import pytest

from components.labels import Meta
from components.redis import SCRIPTS, RedisSpec, render_conf
from components.redis_cluster import SHARD_LABEL, cluster_conf, cluster_objects, members

META = Meta(namespace="scaleladder-phase4", instance="phase4", version="0.1.0")
PASSWORD = "s3cret-cluster-password"
SPEC = RedisSpec(enabled=True, mode="cluster")


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = [obj for obj in objects if obj["kind"] == kind]
    return obj


def shards(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == "StatefulSet"]


def pod_spec(objects: list[dict[str, Any]], shard: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = shards(objects)[shard]["spec"]["template"]["spec"]
    return spec


def containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {container["name"]: container for container in pod_spec(objects)["containers"]}


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_objects_in_order() -> None:
    objects = cluster_objects(META, SPEC, PASSWORD)
    names = [(obj["kind"], obj["metadata"]["name"]) for obj in objects]
    assert names[:-1] == [
        ("Secret", "redis-auth"),
        ("ConfigMap", "redis-config"),
        ("ConfigMap", "redis-scripts"),
        ("Service", "redis-nodes"),
        ("Service", "redis"),
        ("StatefulSet", "redis-shard-0"),
        ("StatefulSet", "redis-shard-1"),
        ("StatefulSet", "redis-shard-2"),
        ("PodDisruptionBudget", "redis"),
    ]
    assert re.fullmatch(r"redis-bootstrap-[0-9a-f]{8}", names[-1][1]) and names[-1][0] == "Job"


@pytest.mark.parametrize(
    "spec",
    [SPEC, RedisSpec(mode="cluster", masters=5, replicas_per_master=2, anti_affinity="required", persistence="none")],
)
def test_objects_pass_strict_schema_validation(spec: RedisSpec) -> None:
    for obj in cluster_objects(META, spec, PASSWORD):
        kubernetes_validate.validate(obj, "1.34.0", strict=True)


def test_cluster_conf_adds_the_cluster_settings_to_the_common_ones() -> None:
    conf = cluster_conf(RedisSpec(mode="cluster", node_timeout_ms=3000))
    assert conf.startswith(render_conf(RedisSpec(mode="cluster")))
    assert conf.endswith(
        "cluster-enabled yes\n"
        "cluster-config-file nodes.conf\n"
        "cluster-node-timeout 3000\n"
        "cluster-preferred-endpoint-type hostname\n"
        "cluster-require-full-coverage yes\n"
        "cluster-allow-reads-when-down no\n"
        "cluster-allow-replica-migration no\n"
    )
    assert "appendonly yes\n" in conf


def test_one_statefulset_per_shard_of_a_master_and_its_replicas_with_their_own_volumes() -> None:
    sets = shards(cluster_objects(META, RedisSpec(mode="cluster", masters=4, replicas_per_master=2), PASSWORD))
    assert [(s["metadata"]["name"], s["spec"]["replicas"]) for s in sets] == [
        ("redis-shard-0", 3),
        ("redis-shard-1", 3),
        ("redis-shard-2", 3),
        ("redis-shard-3", 3),
    ]
    for index, statefulset in enumerate(sets):
        # one headless Service names every shard's pods; each set selects only its own
        assert statefulset["spec"]["serviceName"] == "redis-nodes"
        assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
        assert statefulset["spec"]["selector"]["matchLabels"][SHARD_LABEL] == str(index)
        assert statefulset["spec"]["template"]["metadata"]["labels"][SHARD_LABEL] == str(index)
    # nodes.conf (the node's identity) outlives the pod even without persistence
    for statefulset in shards(cluster_objects(META, RedisSpec(mode="cluster", persistence="none"), PASSWORD)):
        assert [claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]


def test_headless_service_publishes_pods_before_they_are_ready() -> None:
    objects = cluster_objects(META, SPEC, PASSWORD)
    headless, client = [obj for obj in objects if obj["kind"] == "Service"]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert "clusterIP" not in client["spec"]
    selector = {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "phase4"}
    assert headless["spec"]["selector"] == client["spec"]["selector"] == selector


def test_every_node_announces_its_stable_name() -> None:
    node = containers(cluster_objects(META, SPEC, PASSWORD))["redis"]
    assert node["command"] == [
        "sh",
        "/scripts/node-start.sh",
        "--cluster-announce-hostname",
        "$(POD_NAME).redis-nodes.scaleladder-phase4.svc",
    ]
    assert env(node)["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_a_master_hands_over_before_it_is_stopped() -> None:
    spec = pod_spec(cluster_objects(META, SPEC, PASSWORD))
    node = containers(cluster_objects(META, SPEC, PASSWORD))["redis"]
    assert node["lifecycle"] == {"preStop": {"exec": {"command": ["sh", "/scripts/node-stop.sh"]}}}
    assert env(node)["REDIS_SELF"] == "127.0.0.1:6379"
    # the handover (at most 10 s) and the shutdown fit in the grace period
    assert spec["terminationGracePeriodSeconds"] == 30


def test_members_are_the_pods_dns_names_shard_by_shard() -> None:
    assert members(META, RedisSpec(mode="cluster", masters=3, replicas_per_master=1)).split() == [
        "redis-shard-0-0.redis-nodes.scaleladder-phase4.svc:6379",
        "redis-shard-0-1.redis-nodes.scaleladder-phase4.svc:6379",
        "redis-shard-1-0.redis-nodes.scaleladder-phase4.svc:6379",
        "redis-shard-1-1.redis-nodes.scaleladder-phase4.svc:6379",
        "redis-shard-2-0.redis-nodes.scaleladder-phase4.svc:6379",
        "redis-shard-2-1.redis-nodes.scaleladder-phase4.svc:6379",
    ]


def test_rejoin_container_knows_itself_and_every_member() -> None:
    rejoin = containers(cluster_objects(META, SPEC, PASSWORD))["rejoin"]
    assert rejoin["command"] == ["sh", "/scripts/cluster-rejoin.sh"]
    values = env(rejoin)
    assert values["REDIS_SELF"] == "$(POD_NAME).redis-nodes.scaleladder-phase4.svc:6379"
    # read from the mounted `members` key on every round: a scale-out does not roll the pods
    assert values["REDIS_NODES_FILE"] == "/etc/redis/members"
    # shard by shard, 1 + REDIS_REPLICAS members each: which master this node replicates when it has no role
    assert values["REDIS_REPLICAS"] == "1"
    assert {"name": "config", "mountPath": "/etc/redis", "readOnly": True} in rejoin["volumeMounts"]
    config = next(obj for obj in cluster_objects(META, SPEC, PASSWORD) if obj["kind"] == "ConfigMap")
    assert config["data"] == {"redis.conf": cluster_conf(SPEC), "members": members(META, SPEC)}
    # $(POD_NAME) expands only from a variable defined earlier in the list
    names = [item["name"] for item in rejoin["env"]]
    assert names.index("POD_NAME") < names.index("REDIS_SELF")


def test_failover_watch_container_watches_its_own_node_with_the_node_timeout() -> None:
    spec = RedisSpec(enabled=True, mode="cluster", node_timeout_ms=3000)
    pod = containers(cluster_objects(META, spec, PASSWORD))
    assert list(pod) == ["redis", "rejoin", "failover-watch"]
    watch = pod["failover-watch"]
    assert watch["command"] == ["sh", "/scripts/failover-watch.sh"]
    assert watch["image"] == spec.image
    assert env(watch) == {
        # its node is in the same pod; the masters it asks are found at their pod IPs in CLUSTER NODES
        "REDIS_SELF": "127.0.0.1:6379",
        "REDIS_RUN_DIR": "/run/redis",
        "REDIS_NODE_TIMEOUT_MS": "3000",
        "REDIS_WATCH_INTERVAL": "0.5",
        "REDIS_PASSWORD_FILE": "/run/secrets/redis-auth/password",
    }
    assert [(mount["name"], mount["mountPath"]) for mount in watch["volumeMounts"]] == [
        ("scripts", "/scripts"),
        ("run", "/run/redis"),
        ("secrets", "/run/secrets"),
    ]
    # its probes look at its own heartbeat file, not the rejoin loop's
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = " ".join(watch[name]["exec"]["command"])
        assert "/run/redis/failover-watch.alive" in command
        assert "rejoin.alive" not in command
        assert json.dumps(watch[name]) != json.dumps(pod["rejoin"][name])


def test_failover_watch_can_be_turned_off() -> None:
    objects = cluster_objects(META, RedisSpec(enabled=True, mode="cluster", failover_watch=False), PASSWORD)
    assert list(containers(objects)) == ["redis", "rejoin"]
    # everything else is as with the watcher
    with_watch = cluster_objects(META, SPEC, PASSWORD)
    assert [obj for obj in objects if obj["kind"] != "StatefulSet"] == [
        obj for obj in with_watch if obj["kind"] != "StatefulSet"
    ]


def test_every_container_is_hardened_with_distinct_probes_and_limits() -> None:
    for container in containers(cluster_objects(META, SPEC, PASSWORD)).values():
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert set(container["resources"]) == {"requests", "limits"}
        probes = [container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")]
        assert len({json.dumps(probe, sort_keys=True) for probe in probes}) == 3


@pytest.mark.parametrize(
    ("anti_affinity", "rule"),
    [
        ("required", "requiredDuringSchedulingIgnoredDuringExecution"),
        ("preferred", "preferredDuringSchedulingIgnoredDuringExecution"),
    ],
)
def test_a_master_and_its_replicas_never_share_a_node(anti_affinity: str, rule: str) -> None:
    spec = RedisSpec(mode="cluster", anti_affinity=anti_affinity)  # type: ignore[arg-type]
    objects = cluster_objects(META, spec, PASSWORD)
    for shard in range(3):
        (term,) = pod_spec(objects, shard)["affinity"]["podAntiAffinity"][rule]
        term = term.get("podAffinityTerm", term)
        own_shard = {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "phase4", SHARD_LABEL: str(shard)}
        assert term == {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": own_shard}}


def test_required_is_the_default_and_every_pod_spreads_over_nodes_zones_and_ordinals() -> None:
    assert RedisSpec().anti_affinity == "required"
    constraints = pod_spec(cluster_objects(META, SPEC, PASSWORD))["topologySpreadConstraints"]
    everyone = {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "phase4"}
    assert [(c["topologyKey"], c["labelSelector"]["matchLabels"], c.get("matchLabelKeys")) for c in constraints] == [
        # the pods of each ordinal over nodes: every shard's pod 0 (the first masters) on different nodes
        ("kubernetes.io/hostname", everyone, ["apps.kubernetes.io/pod-index"]),
        ("topology.kubernetes.io/zone", everyone, None),
    ]


def test_one_pod_at_a_time_may_be_disrupted() -> None:
    budget = one(cluster_objects(META, SPEC, PASSWORD), "PodDisruptionBudget")
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "phase4"}},
    }


def test_a_scale_out_adds_a_shard_and_changes_no_existing_one() -> None:
    three = shards(cluster_objects(META, RedisSpec(mode="cluster", masters=3), PASSWORD))
    four = shards(cluster_objects(META, RedisSpec(mode="cluster", masters=4), PASSWORD))
    assert four[:3] == three
    assert four[3]["metadata"]["name"] == "redis-shard-3"


def test_bootstrap_job_runs_the_script_for_this_shape() -> None:
    spec = RedisSpec(mode="cluster", masters=4, replicas_per_master=1)
    objects = cluster_objects(META, spec, PASSWORD)
    job = one(objects, "Job")
    three = one(cluster_objects(META, dataclasses.replace(spec, masters=3), PASSWORD), "Job")
    assert job["metadata"]["name"] != three["metadata"]["name"]  # a scale-out runs it anew
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["sh", "/scripts/cluster-bootstrap.sh"]
    values = env(container)
    assert (values["REDIS_MASTERS"], values["REDIS_REPLICAS"]) == ("4", "1")
    assert values["REDIS_NODES"] == members(META, spec) and len(values["REDIS_NODES"].split()) == 8
    assert values["REDIS_PASSWORD_FILE"] == "/run/secrets/redis-auth/password"


def test_no_selector_takes_the_bootstrap_pod_for_a_node() -> None:
    objects = cluster_objects(META, SPEC, PASSWORD)
    job_pod = one(objects, "Job")["spec"]["template"]["metadata"]["labels"]
    node_pod = shards(objects)[0]["spec"]["template"]["metadata"]["labels"]
    selectors = [obj["spec"]["selector"] for obj in objects if obj["kind"] == "Service"]
    selectors += [
        obj["spec"]["selector"]["matchLabels"]
        for obj in objects
        if obj["kind"] == "PodDisruptionBudget" or obj["metadata"]["name"] == "redis-shard-0"
    ]
    for selector in selectors:
        assert selector.items() <= node_pod.items()
        assert not selector.items() <= job_pod.items()


def test_scripts_config_map_holds_the_repository_files() -> None:
    scripts = [obj for obj in cluster_objects(META, SPEC, PASSWORD) if obj["kind"] == "ConfigMap"][1]
    assert scripts["data"] == {
        name: (SCRIPTS / name).read_text()
        for name in (
            "node-start.sh",
            "node-stop.sh",
            "lib.sh",
            "cluster-rejoin.sh",
            "failover-watch.sh",
            "cluster-bootstrap.sh",
        )
    }


def test_password_is_only_in_the_secret() -> None:
    objects = cluster_objects(META, SPEC, PASSWORD)
    secret = one(objects, "Secret")
    assert secret["stringData"] == {"password": PASSWORD}
    assert all(PASSWORD not in json.dumps(obj) for obj in objects if obj is not secret)
