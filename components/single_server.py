"""Phase 1, "one machine": the web process and its database in one pod, on one volume.

Postgres runs as a native sidecar (an init container that keeps running), so the kubelet starts
it and waits for its startup probe before the migration init container and the web container
start; the web process reaches it on localhost. One replica, recreated (never two pods on one
volume), nothing to fail over to: exactly the limits the next phases remove.

Postgres also listens on the pod's address behind Service `web-db`, for one client only: the Job
that copies the database into phase 2's StatefulSet when the stack climbs (components/climb.py).
The NetworkPolicies derived from the stack admit no other.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from components import postgres, web
from components.labels import Meta
from components.pods import mount_secret_files, pod_security

PVC_NAME = f"{web.NAME}-pgdata"
DATABASE_SERVICE = f"{web.NAME}-db"


def objects(
    meta: Meta, web_spec: web.WebSpec, pg_spec: postgres.PostgresSpec, passwords: postgres.PostgresPasswords
) -> list[dict[str, Any]]:
    """Credentials Secret, Postgres scripts, the data volume's claim, the one-pod Deployment and its Service."""
    secret = postgres.credentials_secret(meta, pg_spec, passwords)
    endpoints = postgres.local_endpoints(meta, pg_spec)
    env = postgres.database_env(endpoints)
    return [
        secret,
        postgres.scripts_config_map(meta),
        volume_claim(meta, pg_spec),
        deployment(meta, web_spec, pg_spec, env),
        web.service(meta),
        database_service(meta),
    ]


def database_service(meta: Meta) -> dict[str, Any]:
    """`web-db`: the pod's Postgres, for the climb to phase 2 to copy from."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(web.NAME, "database", object_name=DATABASE_SERVICE),
        "spec": {
            "selector": web.server_selector(meta),
            "ports": [{"name": "postgres", "port": postgres.PORT, "targetPort": postgres.PORT, "protocol": "TCP"}],
        },
    }


def service_endpoints(meta: Meta, pg_spec: postgres.PostgresSpec) -> postgres.PostgresEndpoints:
    """The pod's Postgres as another pod reaches it: through `web-db`."""
    local = postgres.local_endpoints(meta, pg_spec)
    return dataclasses.replace(local, primary=dataclasses.replace(local.primary, host=DATABASE_SERVICE))


def volume_claim(meta: Meta, pg_spec: postgres.PostgresSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta.metadata(web.NAME, "database", object_name=PVC_NAME),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": pg_spec.storage}}},
    }


def deployment(
    meta: Meta, web_spec: web.WebSpec, pg_spec: postgres.PostgresSpec, env: list[dict[str, Any]]
) -> dict[str, Any]:
    selector = {**meta.selector(web.NAME), "app.kubernetes.io/component": "server"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.metadata(web.NAME, "server"),
        "spec": {
            "replicas": 1,
            # the old pod must release the volume before the new one mounts it
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": meta.labels(web.NAME, "server"), "annotations": postgres.scripts_checksum()},
                "spec": mount_secret_files(
                    {
                        "automountServiceAccountToken": False,
                        "terminationGracePeriodSeconds": web_spec.termination_grace_seconds,
                        "securityContext": pod_security(postgres.RUN_AS),
                        "initContainers": [
                            postgres.postgres_sidecar(pg_spec, postgres.secret_name(meta)),
                            web.migrate_container(web_spec, env),
                        ],
                        "containers": [web.web_container(web_spec, env)],
                        "volumes": [
                            web.TMP_VOLUME,
                            postgres.RUN_VOLUME,
                            {"name": postgres.DATA_VOLUME, "persistentVolumeClaim": {"claimName": PVC_NAME}},
                            *postgres.sidecar_volumes(),
                        ],
                    }
                ),
            },
        },
    }
