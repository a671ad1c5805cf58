"""The Postgres builders: phase-1 sidecar, phase-2 primary, the wiring env and the spec's errors."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest

from components import postgres, single_server
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


def test_sidecar_is_a_native_sidecar_that_starts_first() -> None:
    container = postgres.postgres_sidecar(postgres.PostgresSpec(), "postgres-credentials")
    assert container["restartPolicy"] == "Always"
    assert container["startupProbe"]["exec"]["command"] == ["pg_isready", "-q", "-h", "127.0.0.1"]
    assert container["readinessProbe"] != container["livenessProbe"] != container["startupProbe"]
    assert {"name": "pgdata", "mountPath": "/var/lib/postgresql/data"} in container["volumeMounts"]
    assert container["command"] == ["/scripts/postgres-start.sh"]
    assert container["args"][-2:] == ["-c", "listen_addresses=127.0.0.1"]
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
    assert container["readinessProbe"]["exec"]["command"] == ["/scripts/ready.sh", "primary"]
    assert statefulset["template"]["spec"]["securityContext"]["runAsUser"] == 10002


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


def test_group_adds_replicas_read_only_service_and_pooler() -> None:
    objects = postgres.postgres_objects(META, GROUP, PASSWORDS)
    validate(objects)
    assert list(by_name(objects))[5:] == [
        ("StatefulSet", "postgres-replica"),
        ("Service", "postgres-replica"),
        ("Service", "postgres-ro"),
        ("PodDisruptionBudget", "postgres-replica"),
        ("ConfigMap", "pgbouncer-config"),
        ("Deployment", "pgbouncer"),
        ("Service", "pgbouncer"),
        ("PodDisruptionBudget", "pgbouncer"),
    ]


def test_one_replica_or_one_pooler_pod_gets_no_disruption_budget() -> None:
    spec = postgres.PostgresSpec(replicas=1, pooler=postgres.PoolerSpec(enabled=True, replicas=1))
    kinds = [obj["kind"] for obj in postgres.postgres_objects(META, spec, PASSWORDS)]
    assert "PodDisruptionBudget" not in kinds


def test_services_select_only_their_role() -> None:
    named = by_name(postgres.postgres_objects(META, GROUP, PASSWORDS))
    primary = named[("StatefulSet", "postgres")]["spec"]["template"]["metadata"]["labels"]
    replica = named[("StatefulSet", "postgres-replica")]["spec"]["template"]["metadata"]["labels"]
    rw = named[("Service", "postgres-rw")]["spec"]["selector"]
    ro = named[("Service", "postgres-ro")]["spec"]["selector"]
    assert rw.items() <= primary.items() and not rw.items() <= replica.items()
    assert ro.items() <= replica.items() and not ro.items() <= primary.items()
    budget = named[("PodDisruptionBudget", "postgres-replica")]["spec"]
    assert budget == {"maxUnavailable": 1, "selector": {"matchLabels": ro}}


def test_replicas_bootstrap_from_the_rw_service_and_probe_their_lag() -> None:
    spec = postgres.PostgresSpec(
        replicas=2, replication=postgres.ReplicationSpec(max_lag_bytes=4096, max_lag_seconds=3)
    )
    statefulset = by_name(postgres.replica_objects(META, spec))[("StatefulSet", "postgres-replica")]["spec"]
    assert statefulset["replicas"] == 2 and statefulset["serviceName"] == "postgres-replica"
    pod = statefulset["template"]["spec"]
    (bootstrap,) = pod["initContainers"]
    assert bootstrap["command"] == ["/scripts/replica-bootstrap.sh"] and "restartPolicy" not in bootstrap
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in bootstrap["env"]}
    assert env["PRIMARY_HOST"] == "postgres-rw" and env["PRIMARY_PORT"] == "5432"
    assert env["REPLICA_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["REPLICATION_PASSWORD_FILE"] == "/run/secrets/postgres-credentials/replication-password"
    # on the data volume, beside PGDATA: the password file primary_conninfo names outlives the init container
    assert env["PGPASSFILE"] == "/var/lib/postgresql/data/replication.pgpass"
    container = pod["containers"][0]
    # the replica's server starts on the clone: it needs no password of the group, and mounts none
    assert not any(e["name"].endswith("_FILE") for e in container["env"])
    assert "secrets" not in {m["name"] for m in container["volumeMounts"]}
    assert container["readinessProbe"]["exec"]["command"] == ["/scripts/ready.sh", "replica"]
    lag = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("MAX_LAG")}
    assert lag == {"MAX_LAG_BYTES": "4096", "MAX_LAG_SECONDS": "3"}
    assert [c["topologyKey"] for c in pod["topologySpreadConstraints"]] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]


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

    assert classes(postgres.PostgresSpec(replicas=1)) == [None, None]
    assert classes(postgres.PostgresSpec(replicas=1, storage_class="fast")) == ["fast", "fast"]


def test_every_pod_running_the_scripts_rolls_when_one_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    def templates() -> list[dict]:
        phase1 = single_server.deployment(META, WebSpec(), postgres.PostgresSpec(), [])
        group = postgres.postgres_objects(META, GROUP, PASSWORDS)
        workloads = [phase1, *(o for o in group if o["kind"] == "StatefulSet")]
        return [w["spec"]["template"]["metadata"].get("annotations", {}) for w in workloads]

    before = templates()
    assert len(before) == 3 and all(a == postgres.scripts_checksum() for a in before)
    original = postgres.script
    monkeypatch.setattr(postgres, "script", lambda name: original(name) + ("#\n" if name == "ready.sh" else ""))
    after = templates()
    assert all(a["checksum/scripts"] != b["checksum/scripts"] for a, b in zip(after, before, strict=True))
