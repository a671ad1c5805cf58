"""The Postgres builders: phase-1 sidecar, phase-2 single server, Patroni group, wiring env, the spec's errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components import cli, network_policy, patroni, postgres, shards, single_server, topology
from components.labels import Meta
from components.pods import mount_secret_files
from components.settings import load
from components.web import WebSpec

META = Meta(namespace="ns", instance="test", version="0.0.0")
PASSWORDS = postgres.PostgresPasswords(app="app-secret-value", replication="replication-secret-value")
SCRIPTS = Path(postgres.__file__).parent / "scripts" / "postgres"


def by_name(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def errors(raw: dict) -> list[str]:
    spec, problems = load(postgres.PostgresSpec, raw, "postgres")
    assert spec is None
    return [str(problem) for problem in problems]


def validate(objects: list[dict]) -> None:
    for obj in objects:
        kubernetes_validate.validate(obj, "1.34.0", strict=True)


def test_defaults_load_and_pin_major_15() -> None:
    spec, problems = load(postgres.PostgresSpec, {}, "postgres")
    assert problems == [] and spec == postgres.PostgresSpec()
    assert spec.image == "postgres:15.18-bookworm"
    assert not spec.replicas and not spec.pooler.enabled


def test_bad_values_name_the_key_the_value_and_the_rule() -> None:
    assert errors({"image": "postgres:latest", "user": "replicator", "storage": "1G"}) == [
        "scaleladder:postgres.storage: must match [1-9][0-9]*(Mi|Gi|Ti), got '1G'",
    ]
    assert errors({"image": "postgres:16.4", "user": "replicator"}) == [
        "scaleladder:postgres.image: must be PostgreSQL 15 (the scripts are tested on it), got 'postgres:16.4'",
        "scaleladder:postgres.user: must not be 'postgres' or 'replicator' (reserved), got 'replicator'",
    ]
    assert errors({"image": "postgres:15.18@sha256:" + "a" * 64, "pooler": {"image": "x/pgbouncer:latest"}}) == [
        "scaleladder:postgres.pooler.image: must be pinned to an explicit version, got 'x/pgbouncer:latest'",
    ]
    assert errors({"storage_class": "Fast SSD"}) == [
        "scaleladder:postgres.storage_class: must match ([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?, got 'Fast SSD'",
    ]
    assert errors({"image": "postgres:latest"}) == [
        "scaleladder:postgres.image: must be PostgreSQL 15 (the scripts are tested on it), got 'postgres:latest'",
    ]
    assert errors({"image": "postgres"}) == [
        f"scaleladder:postgres.image: must match {postgres.IMAGE_PATTERN}, got 'postgres'",
    ]
    assert errors({"replicas": 9, "pooler": {"pool_mode": "statement"}}) == [
        "scaleladder:postgres.replicas: must be <= 5, got 9",
        "scaleladder:postgres.pooler.pool_mode: must be one of 'transaction', 'session', got 'statement'",
    ]


def test_cross_field_rules() -> None:
    assert errors({"storage": "256Mi"}) == [
        "scaleladder:postgres.replication.max_slot_wal_keep_mb: must be at most half of storage "
        "(256Mi = 256 MiB), got 256",
    ]
    assert errors({"max_connections": 50, "pooler": {"enabled": True, "replicas": 2}}) == [
        "scaleladder:postgres.pooler.default_pool_size: pooler.replicas x (default_pool_size + reserve_pool_size)"
        " = 50 server connections must fit in max_connections - 10 = 40",
    ]
    # the same pooler without PgBouncer enabled is not a problem
    assert load(postgres.PostgresSpec, {"max_connections": 50, "pooler": {"replicas": 2}})[1] == []
    # a leader that cannot renew its lock must be able to retry the API server before the lock expires
    assert errors({"ha": {"ttl": 20, "loop_wait": 10, "retry_timeout": 10}}) == [
        "scaleladder:postgres.ha.ttl: must be at least loop_wait + 2 x retry_timeout = 30 (a leader must be able "
        "to retry the API server before its lock expires), got 20",
    ]
    assert load(postgres.PostgresSpec, {"ha": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}})[1] == []


def test_sidecar_is_a_native_sidecar_that_starts_first() -> None:
    container = postgres.postgres_sidecar(postgres.PostgresSpec(), "postgres-credentials")
    assert container["restartPolicy"] == "Always"
    assert container["startupProbe"]["exec"]["command"] == ["pg_isready", "-q", "-h", "127.0.0.1"]
    assert container["readinessProbe"] != container["livenessProbe"] != container["startupProbe"]
    assert {"name": "pgdata", "mountPath": "/var/lib/postgresql/data"} in container["volumeMounts"]
    assert container["command"] == ["/scripts/postgres-start.sh"]
    # the image's default, every address: the climb to phase 2 copies from it through Service web-db
    assert not any(arg.startswith("listen_addresses") for arg in container["args"])
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-credentials/password"
    assert env["PGDATA"] == "/var/lib/postgresql/data/pgdata"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert set(container["resources"]) == {"requests", "limits"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "one-machine"},
        "spec": {
            "initContainers": [container],
            "containers": [{"name": "web", "image": "scaleladder/sample:0.1.0"}],
            "volumes": [
                postgres.RUN_VOLUME,
                {"name": "tmp", "emptyDir": {}},
                {"name": "pgdata", "emptyDir": {}},
                *postgres.sidecar_volumes(),
            ],
        },
    }
    validate([{**pod, "spec": mount_secret_files(pod["spec"])}])
    # phase 1 creates no replication role: the only hook takes the password out of the entrypoint
    initdb = postgres.sidecar_volumes()[1]["configMap"]["items"]
    assert initdb == [{"key": "forget-password.sh", "path": "99-forget-password.sh", "mode": 0o444}]


def test_phase_two_is_secret_scripts_primary_and_its_services() -> None:
    objects = postgres.postgres_objects(META, postgres.PostgresSpec(), PASSWORDS)
    validate(objects)
    assert list(by_name(objects)) == [
        ("Secret", "postgres-credentials"),
        ("ConfigMap", "postgres-scripts"),
        ("StatefulSet", "postgres"),
        ("Service", "postgres"),
        ("Service", "postgres-rw"),
    ]
    named = by_name(objects)
    statefulset = named[("StatefulSet", "postgres")]["spec"]
    assert statefulset["replicas"] == 1 and statefulset["serviceName"] == "postgres"
    claim = statefulset["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "pgdata" and claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    pod_labels = statefulset["template"]["metadata"]["labels"]
    for service in ("postgres", "postgres-rw"):
        selector = named[("Service", service)]["spec"]["selector"]
        assert selector.items() <= pod_labels.items() and "app.kubernetes.io/version" not in selector
    assert named[("Service", "postgres")]["spec"]["clusterIP"] == "None"
    assert "clusterIP" not in named[("Service", "postgres-rw")]["spec"]
    container = statefulset["template"]["spec"]["containers"][0]
    assert container["image"] == "postgres:15.18-bookworm" and container["command"] == ["/scripts/postgres-start.sh"]
    assert container["readinessProbe"]["exec"]["command"] == ["/scripts/ready.sh"]
    pod = statefulset["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10002
    # a single server needs no Patroni: no API access, no role label for its Services to select
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert not any(patroni.ROLE_LABEL in named[("Service", s)]["spec"]["selector"] for s in ("postgres", "postgres-rw"))


def test_primary_runs_the_init_script_then_forgets_the_password_as_entrypoint_hooks() -> None:
    statefulset = by_name(postgres.postgres_objects(META, postgres.PostgresSpec(), PASSWORDS))[
        ("StatefulSet", "postgres")
    ]
    pod = statefulset["spec"]["template"]["spec"]
    initdb = next(v for v in pod["volumes"] if v["name"] == "initdb")
    # run (executable), then sourced (not executable): the entrypoint's own rule for *.sh hooks
    assert initdb["configMap"]["items"] == [
        {"key": "primary-init.sh", "path": "10-primary-init.sh", "mode": 0o555},
        {"key": "forget-password.sh", "path": "99-forget-password.sh", "mode": 0o444},
    ]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["initdb"] == "/docker-entrypoint-initdb.d" and mounts["scripts"] == "/scripts"
    assert mounts["secrets"] == "/run/secrets"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-credentials/password"
    assert env["REPLICATION_PASSWORD_FILE"] == "/run/secrets/postgres-credentials/replication-password"
    (secrets,) = (v for v in pod["volumes"] if v["name"] == "secrets")
    assert secrets["projected"] == {
        "defaultMode": 0o440,
        "sources": [
            {
                "secret": {
                    "name": "postgres-credentials",
                    "items": [
                        {"key": "password", "path": "postgres-credentials/password"},
                        {"key": "replication-password", "path": "postgres-credentials/replication-password"},
                    ],
                }
            }
        ],
    }


def test_scripts_config_map_holds_the_repository_files_byte_for_byte() -> None:
    data = postgres.scripts_config_map(META)["data"]
    assert set(data) == {path.name for path in SCRIPTS.glob("*.sh")}
    for name, text in data.items():
        assert text == (SCRIPTS / name).read_text()


def test_passwords_appear_only_in_the_secret() -> None:
    spec = postgres.PostgresSpec(replicas=2, pooler=postgres.PoolerSpec(enabled=True))
    objects = postgres.postgres_objects(META, spec, PASSWORDS)
    for obj in objects:
        text = json.dumps(obj)
        inside = obj["kind"] == "Secret"
        assert (PASSWORDS.app in text) is inside and (PASSWORDS.replication in text) is inside


def test_database_env_names_the_password_file_and_urls_without_it() -> None:
    env = postgres.database_env(postgres.endpoints(META, postgres.PostgresSpec()))
    assert env == [
        {"name": "DATABASE_PASSWORD_FILE", "value": "/run/secrets/postgres-credentials/password"},
        {"name": "DATABASE_URL", "value": "postgresql://app@postgres-rw:5432/app"},
    ]
    local = postgres.database_env(postgres.local_endpoints(META, postgres.PostgresSpec(database="shop", user="web")))
    assert local[1] == {"name": "DATABASE_URL", "value": "postgresql://web@127.0.0.1:5432/shop"}


@pytest.mark.parametrize(
    ("pooler", "primary", "replica"),
    [
        (False, "postgres-rw:5432/app", "postgres-ro:5432/app"),
        (True, "pgbouncer:6432/app", "pgbouncer:6432/app_ro"),
    ],
)
def test_replica_urls_go_to_the_read_only_service_or_the_pooler(pooler: bool, primary: str, replica: str) -> None:
    spec = postgres.PostgresSpec(replicas=2, pooler=postgres.PoolerSpec(enabled=pooler))
    env = {e["name"]: e.get("value") for e in postgres.database_env(postgres.endpoints(META, spec))}
    assert env["DATABASE_URL"] == f"postgresql://app@{primary}"
    assert env["DATABASE_REPLICA_URLS"] == f"postgresql://app@{replica}"


GROUP = postgres.PostgresSpec(replicas=2, pooler=postgres.PoolerSpec(enabled=True))


def test_group_names_keep_the_main_groups_names_and_prefix_every_other_group() -> None:
    assert postgres.GroupNames.of("postgres") == postgres.MAIN
    assert postgres.GroupNames.of("postgres") == postgres.GroupNames(
        members="postgres",
        pooler="pgbouncer",
        rw="postgres-rw",
        ro="postgres-ro",
        scripts="postgres-scripts",
        pooler_config="pgbouncer-config",
        secret="postgres-credentials",
        patroni="postgres-patroni",
    )
    assert postgres.GroupNames.of("pg-shard-0") == postgres.GroupNames(
        members="pg-shard-0",
        pooler="pg-shard-0-pooler",
        rw="pg-shard-0-rw",
        ro="pg-shard-0-ro",
        scripts="pg-shard-0-scripts",
        pooler_config="pg-shard-0-pooler-config",
        secret="pg-shard-0-credentials",
        patroni="pg-shard-0-patroni",
    )


def group(spec: postgres.PostgresSpec = GROUP) -> dict[tuple[str, str], dict]:
    return by_name(postgres.postgres_objects(META, spec, PASSWORDS))


def test_a_group_is_one_patroni_statefulset_with_its_access_services_budget_and_pooler() -> None:
    objects = postgres.postgres_objects(META, GROUP, PASSWORDS)
    validate(objects)
    assert list(by_name(objects)) == [
        ("Secret", "postgres-credentials"),
        ("ConfigMap", "postgres-scripts"),
        ("ConfigMap", "postgres-patroni"),
        ("ServiceAccount", "postgres-patroni"),
        ("Role", "postgres-patroni"),
        ("RoleBinding", "postgres-patroni"),
        ("StatefulSet", "postgres"),
        ("Service", "postgres"),
        ("Service", "postgres-rw"),
        ("Service", "postgres-ro"),
        ("PodDisruptionBudget", "postgres"),
        ("ConfigMap", "pgbouncer-config"),
        ("Deployment", "pgbouncer"),
        ("Service", "pgbouncer"),
        ("PodDisruptionBudget", "pgbouncer"),
    ]
    statefulset = by_name(objects)[("StatefulSet", "postgres")]["spec"]
    # the leader and both replicas are members of one StatefulSet: Patroni, not the pod's name, decides who leads
    assert statefulset["replicas"] == 3 and statefulset["serviceName"] == "postgres"
    pod = statefulset["template"]["spec"]
    (container,) = pod["containers"]
    assert "initContainers" not in pod
    assert container["image"] == patroni.PatroniSpec().image
    assert container["image"].startswith("scaleladder/postgres-patroni:")
    assert container["command"] == ["/scripts/patroni-start.sh"]
    assert [c["topologyKey"] for c in pod["topologySpreadConstraints"]] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]


def test_the_members_image_comes_from_the_ha_setting() -> None:
    spec = postgres.PostgresSpec(replicas=1, ha=patroni.PatroniSpec(image="scaleladder/postgres-patroni:0123456789ab"))
    pod = group(spec)[("StatefulSet", "postgres")]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "scaleladder/postgres-patroni:0123456789ab"
    # the single server of phase 2 keeps the official image
    single = by_name(postgres.postgres_objects(META, dataclasses.replace(spec, replicas=0), PASSWORDS))
    assert single[("StatefulSet", "postgres")]["spec"]["template"]["spec"]["containers"][0]["image"] == spec.image


def test_a_group_always_has_a_disruption_budget_and_one_pooler_pod_none() -> None:
    def budgets(spec: postgres.PostgresSpec) -> dict[str, dict]:
        objects = postgres.postgres_objects(META, spec, PASSWORDS)
        return {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "PodDisruptionBudget"}

    selector = META.selector("postgres")
    one = postgres.PostgresSpec(replicas=1, pooler=postgres.PoolerSpec(enabled=True, replicas=1))
    # a group of two still loses at most one member to a drain: the other one leads or takes over
    assert budgets(one) == {"postgres": {"maxUnavailable": 1, "selector": {"matchLabels": selector}}}
    # a single server has nothing to keep up while it is evicted
    assert budgets(postgres.PostgresSpec(pooler=postgres.PoolerSpec(enabled=True, replicas=1))) == {}


def test_services_select_only_their_role() -> None:
    named = group()
    statefulset = named[("StatefulSet", "postgres")]["spec"]
    labels = statefulset["template"]["metadata"]["labels"]
    members = statefulset["selector"]["matchLabels"]
    # Patroni labels its pods while they run: the template carries no role, each Service adds the one it serves
    assert "role" not in labels and members.items() <= labels.items()
    assert named[("Service", "postgres-rw")]["spec"]["selector"] == {**members, "role": "primary"}
    assert named[("Service", "postgres-ro")]["spec"]["selector"] == {**members, "role": "replica"}
    headless = named[("Service", "postgres")]["spec"]
    assert headless["selector"] == members and headless["clusterIP"] == "None"
    # members find each other before they are ready: a replica clones the leader while it is not ready itself
    assert headless["publishNotReadyAddresses"] is True
    for name in ("postgres-rw", "postgres-ro"):
        service = named[("Service", name)]["spec"]
        assert "clusterIP" not in service and "publishNotReadyAddresses" not in service
        assert service["ports"] == [{"name": "postgres", "port": 5432, "targetPort": "postgres", "protocol": "TCP"}]
        # the workload is found by its static labels; the role is Patroni's to set
        assert topology.selects(service["selector"], labels)
    assert named[("PodDisruptionBudget", "postgres")]["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": members},
    }


def test_members_are_ready_by_patronis_lag_check_and_find_each_other_by_the_headless_service() -> None:
    spec = postgres.PostgresSpec(replicas=2, replication=postgres.ReplicationSpec(max_lag_bytes=4096))
    container = group(spec)[("StatefulSet", "postgres")]["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [
        {"name": "postgres", "containerPort": 5432},
        {"name": "patroni", "containerPort": 8008},
    ]
    # ready: the leader, or a replica that has replayed within max_lag_bytes of it (so postgres-ro drops it)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readiness?lag=4096", "port": "patroni"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/liveness", "port": "patroni"}
    assert container["startupProbe"]["httpGet"] == {"path": "/liveness", "port": "patroni"}
    # a replica's first start clones the leader: its startup probe waits 10 minutes
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 600
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "POD_NAMESPACE" not in env  # the namespace is in the configuration, which patronictl reads too
    assert env["MEMBERS_HOST"] == "postgres" and env["POSTGRES_DB"] == "app"
    # passwords as files only: patroni-start.sh writes them into Patroni's configuration in a memory volume
    assert env["SUPERUSER_PASSWORD_FILE"] == "/run/secrets/postgres-credentials/password"
    assert env["REPLICATION_PASSWORD_FILE"] == "/run/secrets/postgres-credentials/replication-password"
    assert not any("PASSWORD" in name for name in env if not name.endswith("_FILE"))
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["patroni-config"] == {"name": "patroni-config", "mountPath": "/etc/patroni", "readOnly": True}
    assert mounts["patroni-run"]["mountPath"] == "/run/patroni" and mounts["scripts"]["mountPath"] == "/scripts"
    assert mounts["pgdata"]["mountPath"] == "/var/lib/postgresql/data"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in group(spec)[("StatefulSet", "postgres")]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["patroni-config"] == {"name": "patroni-config", "configMap": {"name": "postgres-patroni"}}
    assert volumes["patroni-run"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}


def test_patroni_may_only_keep_its_lock_and_label_its_pods() -> None:
    named = group()
    role = named[("Role", "postgres-patroni")]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
    ]
    binding = named[("RoleBinding", "postgres-patroni")]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "postgres-patroni"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "postgres-patroni", "namespace": "ns"}]
    # the account mounts no token by default: only the pods that run Patroni ask for one
    assert named[("ServiceAccount", "postgres-patroni")]["automountServiceAccountToken"] is False
    pod = named[("StatefulSet", "postgres")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "postgres-patroni" and pod["automountServiceAccountToken"] is True
    pooler = named[("Deployment", "pgbouncer")]["spec"]["template"]["spec"]
    assert pooler["automountServiceAccountToken"] is False and "serviceAccountName" not in pooler


@pytest.mark.parametrize("stack", ["phase3", "phase5", "phase6"])
def test_only_the_postgres_groups_mount_a_service_account_token(stack: str) -> None:
    objects = cli.load_stack(stack).objects()
    mounting = sorted(w["metadata"]["name"] for w in topology.workloads(objects) if network_policy.uses_api_server(w))
    groups = sorted(
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "StatefulSet"
        and "checksum/patroni" in (o["spec"]["template"]["metadata"].get("annotations") or {})
    )
    assert mounting == groups and "postgres" in groups
    if stack != "phase3":
        assert groups == ["pg-shard-0", "pg-shard-1", "postgres"]
    for workload in topology.workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        if workload["metadata"]["name"] not in groups:
            assert pod.get("automountServiceAccountToken") is False, workload["metadata"]["name"]


def patroni_yml(objects: dict[tuple[str, str], dict], name: str = "postgres-patroni") -> dict:
    """The kit's Patroni configuration: the one file of the group's ConfigMap, parsed."""
    data = objects[("ConfigMap", name)]["data"]
    assert list(data) == [patroni.CONFIG_FILE]
    document: dict = yaml.safe_load(data[patroni.CONFIG_FILE])
    return document


def test_the_passwords_patroni_start_adds_come_after_the_kits_configuration() -> None:
    """Patroni merges the files of its configuration directory in name order: the password file,
    written by patroni-start.sh, must not be overridden by the ConfigMap's file."""
    start = postgres.script("patroni-start.sh")
    assert '"$PATRONI_RUN_DIR/90-passwords.yml"' in start
    assert patroni.CONFIG_FILE.endswith(".yml") and patroni.CONFIG_FILE < "90-passwords.yml"


def test_patroni_configuration_carries_the_ha_settings_and_no_password() -> None:
    ha = patroni.PatroniSpec(ttl=45, loop_wait=5, retry_timeout=15, maximum_lag_on_failover=2048, synchronous_mode=True)
    spec = postgres.PostgresSpec(replicas=2, ha=ha)
    document = patroni_yml(group(spec))
    dcs = document["bootstrap"]["dcs"]
    assert {key: dcs[key] for key in ("ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover")} == {
        "ttl": 45,
        "loop_wait": 5,
        "retry_timeout": 15,
        "maximum_lag_on_failover": 2048,
    }
    assert dcs["synchronous_mode"] is True
    assert patroni_yml(group())["bootstrap"]["dcs"]["synchronous_mode"] is False
    # every member runs with the server settings a single server has, and with the kit's pg_hba
    assert dcs["postgresql"]["parameters"] == postgres.server_settings(spec)
    assert dcs["postgresql"]["pg_hba"] == [
        "local all all trust",
        "host replication replicator all scram-sha-256",
        "host all all all scram-sha-256",
    ]
    assert document["scope"] == "postgres"
    assert document["kubernetes"]["labels"] == META.selector("postgres")
    assert (document["kubernetes"]["role_label"], document["kubernetes"]["leader_label_value"]) == ("role", "primary")
    assert document["kubernetes"]["follower_label_value"] == "replica"
    assert document["restapi"]["listen"] == "0.0.0.0:8008"
    assert document["postgresql"]["data_dir"] == "/var/lib/postgresql/data/pgdata"
    assert document["postgresql"]["authentication"] == {
        "superuser": {"username": "app"},
        "replication": {"username": "replicator"},
    }
    assert document["bootstrap"]["post_bootstrap"] == "/scripts/patroni-post-bootstrap.sh"
    # patroni-start.sh adds the passwords from their files; the ConfigMap holds none
    text = json.dumps(document)
    assert "password" not in text.replace("password_encryption", "") and PASSWORDS.app not in text


def test_phase_five_groups_commit_only_when_a_replica_has_the_wal() -> None:
    for stack, synchronous in [("phase3", False), ("phase4", False), ("phase5", True), ("phase6", True)]:
        named = by_name(cli.load_stack(stack).objects())
        groups = [key[1] for key in named if key[0] == "ConfigMap" and key[1].endswith("-patroni")]
        assert groups, stack
        for name in groups:
            assert patroni_yml(named, name)["bootstrap"]["dcs"]["synchronous_mode"] is synchronous, (stack, name)


def test_the_members_roll_on_their_local_configuration_but_not_on_the_groups_seed() -> None:
    def annotations(spec: postgres.PostgresSpec) -> dict[str, str]:
        return group(spec)[("StatefulSet", "postgres")]["spec"]["template"]["metadata"]["annotations"]

    def config(spec: postgres.PostgresSpec) -> str:
        return group(spec)[("ConfigMap", "postgres-patroni")]["data"][patroni.CONFIG_FILE]

    assert annotations(GROUP) == annotations(GROUP)
    # a setting of the running group (bootstrap.dcs) updates the ConfigMap but restarts no member:
    # Patroni reads it only when the group is created, and a restart of the leader is a switchover
    slower = postgres.PostgresSpec(replicas=2, ha=patroni.PatroniSpec(ttl=60))
    assert config(GROUP) != config(slower)
    assert annotations(GROUP) == annotations(slower)
    # what each member reads at every start (the local part, here the superuser's name) rolls them
    renamed = dataclasses.replace(GROUP, user="owner")
    assert annotations(GROUP)["checksum/patroni"] != annotations(renamed)["checksum/patroni"]
    assert annotations(GROUP)["checksum/scripts"] == annotations(renamed)["checksum/scripts"]
    # a replica more or less changes no member's configuration: nothing restarts
    assert annotations(GROUP) == annotations(dataclasses.replace(GROUP, replicas=3))


def test_server_settings_size_replication_for_the_most_replicas_allowed() -> None:
    settings = postgres.server_settings(postgres.PostgresSpec(replicas=3))
    assert settings["max_wal_senders"] == "10" and settings["max_replication_slots"] == "10"
    # adding a replica restarts no member: nothing here follows the replica count
    assert postgres.server_settings(postgres.PostgresSpec(replicas=postgres.MAX_REPLICAS)) == settings
    assert settings["max_slot_wal_keep_size"] == "256MB" and settings["hot_standby_feedback"] == "on"


def test_pgbouncer_ini_routes_db_to_rw_and_db_ro_to_ro() -> None:
    ini = postgres.pgbouncer_ini(
        GROUP, primary=("rw", 5432), replica=("ro", 5433), listen=("0.0.0.0", 6432), auth_file="/a/userlist.txt"
    )
    assert ini == (
        "; Rendered by scaleladder from the stack's postgres.pooler spec.\n"
        "[databases]\n"
        "app = host=rw port=5432 dbname=app\n"
        "app_ro = host=ro port=5433 dbname=app\n"
        "\n"
        "[pgbouncer]\n"
        "listen_addr = 0.0.0.0\n"
        "listen_port = 6432\n"
        "unix_socket_dir = \n"
        "auth_type = scram-sha-256\n"
        "auth_file = /a/userlist.txt\n"
        "pool_mode = transaction\n"
        "max_client_conn = 1000\n"
        "default_pool_size = 20\n"
        "reserve_pool_size = 5\n"
        "server_lifetime = 60\n"
        "max_prepared_statements = 100\n"
    )
    plain = postgres.PostgresSpec(pooler=postgres.PoolerSpec(enabled=True, max_prepared_statements=0))
    ini = postgres.pgbouncer_ini(plain, primary=("rw", 1), replica=None, listen=("l", 2), auth_file="f")
    assert "app_ro" not in ini and "max_prepared_statements" not in ini


def test_pooler_reads_its_password_from_the_secret_at_start() -> None:
    named = by_name(postgres.pooler_objects(META, GROUP))
    pod = named[("Deployment", "pgbouncer")]["spec"]["template"]["spec"]
    (userlist,) = pod["initContainers"]
    assert userlist["command"] == ["/scripts/pgbouncer-userlist.sh"]
    password = next(e for e in userlist["env"] if e["name"] == "POOLER_PASSWORD_FILE")
    assert password["value"] == "/run/secrets/postgres-credentials/password"
    # PgBouncer itself reads only the auth file the init container wrote: it mounts no Secret
    assert "secrets" not in {m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"name": "auth", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod["volumes"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/cloudnative-pg/pgbouncer:1.22.1-16"
    assert container["command"] == ["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]
    assert named[("Service", "pgbouncer")]["spec"]["ports"][0]["port"] == 6432
    ini = named[("ConfigMap", "pgbouncer-config")]["data"]["pgbouncer.ini"]
    assert "auth_file = /run/pgbouncer/userlist.txt" in ini and "host=postgres-ro port=5432" in ini


def test_a_changed_pooler_config_rolls_the_pooler() -> None:
    def checksum(spec: postgres.PostgresSpec) -> str:
        deployment = by_name(postgres.pooler_objects(META, spec))[("Deployment", "pgbouncer")]
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    bigger = postgres.PostgresSpec(replicas=2, pooler=postgres.PoolerSpec(enabled=True, default_pool_size=30))
    assert checksum(GROUP) == checksum(GROUP) != checksum(bigger)


def test_storage_class_is_set_on_every_claim_only_when_given() -> None:
    def classes(spec: postgres.PostgresSpec) -> list[str | None]:
        statefulsets = [o for o in postgres.postgres_objects(META, spec, PASSWORDS) if o["kind"] == "StatefulSet"]
        return [s["spec"]["volumeClaimTemplates"][0]["spec"].get("storageClassName") for s in statefulsets]

    assert classes(postgres.PostgresSpec(replicas=1)) == [None]
    assert classes(postgres.PostgresSpec(replicas=1, storage_class="fast")) == ["fast"]
    assert classes(postgres.PostgresSpec(storage_class="fast")) == ["fast"]
    # each shard group's members claim from the same class
    groups = shards.group_objects(
        META, shards.ShardsSpec(groups=2, replicas=1), postgres.PostgresSpec(storage_class="fast"), lambda _: PASSWORDS
    )
    claims = [
        o["spec"]["volumeClaimTemplates"][0]["spec"].get("storageClassName")
        for _, objects in groups
        for o in objects
        if o["kind"] == "StatefulSet"
    ]
    assert claims == ["fast", "fast"]


def test_every_pod_running_the_scripts_rolls_when_one_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    def templates() -> list[dict]:
        phase1 = single_server.deployment(META, WebSpec(), postgres.PostgresSpec(), [])
        single = postgres.postgres_objects(META, postgres.PostgresSpec(), PASSWORDS)
        members = postgres.postgres_objects(META, GROUP, PASSWORDS)
        workloads = [phase1, *(o for o in [*single, *members] if o["kind"] == "StatefulSet")]
        return [w["spec"]["template"]["metadata"].get("annotations", {}) for w in workloads]

    before = templates()
    assert len(before) == 3 and all(
        a["checksum/scripts"] == postgres.scripts_checksum()["checksum/scripts"] for a in before
    )
    assert before[0] == before[1] == postgres.scripts_checksum()
    assert set(before[2]) == {"checksum/scripts", "checksum/patroni"}
    original = postgres.script
    for changed in ("ready.sh", "patroni-start.sh"):
        monkeypatch.setattr(
            postgres, "script", lambda name, changed=changed: original(name) + ("#\n" if name == changed else "")
        )
        after = templates()
        assert all(a["checksum/scripts"] != b["checksum/scripts"] for a, b in zip(after, before, strict=True)), changed
        assert after[2]["checksum/patroni"] == before[2]["checksum/patroni"]
