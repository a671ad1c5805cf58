"""Redis Cluster (phase 4): masters x (1 + replicas) pods of one StatefulSet, formed by a Job.

Every pod announces its stable DNS name (`redis-3.redis-nodes.<namespace>.svc`) and clients are
redirected by name (`cluster-preferred-endpoint-type hostname`), so a pod that comes back with a
new IP keeps both its identity (node ID in nodes.conf, on its volume) and its address. The
`rejoin` container reconnects members whose IPs all changed at once; the bootstrap Job creates
the cluster, and after a scale-out joins the new pods, assigns replicas and rebalances slots.
The `failover-watch` container (unless `failover_watch` is off) promotes a replica as soon as its
master has been unreachable for the node timeout and most masters confirm it, instead of waiting
for Redis's own failure detection; a master stopped by Kubernetes hands its slots over first
(node-stop.sh, its preStop).
"""

from __future__ import annotations

from typing import Any

from components.labels import Meta
from components.pods import Resources, container_security, exec_probe, job, spread
from components.redis import (
    CONF_DIR,
    NAME,
    PORT,
    RUN_AS,
    RUN_DIR,
    SCRIPTS_DIR,
    RedisSpec,
    auth_secret,
    client_service,
    files_config_maps,
    headless_service,
    node_container,
    password_env,
    pod_volumes,
    render_conf,
    stateful_set,
)

COMPONENT = "cache"
SCRIPTS = [
    "node-start.sh",
    "node-stop.sh",
    "lib.sh",
    "cluster-rejoin.sh",
    "failover-watch.sh",
    "cluster-bootstrap.sh",
]
HELPER_RESOURCES = Resources(cpu_request="10m", memory_request="16Mi", cpu_limit="200m", memory_limit="64Mi")
HEARTBEAT = f"{RUN_DIR}/rejoin.alive"
WATCH_HEARTBEAT = f"{RUN_DIR}/failover-watch.alive"


def cluster_conf(spec: RedisSpec) -> str:
    """redis.conf of every cluster node: the common settings plus the cluster's."""
    return render_conf(
        spec,
        [
            ("cluster-enabled", "yes"),
            ("cluster-config-file", "nodes.conf"),
            ("cluster-node-timeout", str(spec.node_timeout_ms)),
            # MOVED/ASK and CLUSTER SLOTS name nodes by the hostname they announce, not their IP
            ("cluster-preferred-endpoint-type", "hostname"),
            # a slot without a master stops the cluster instead of serving a partial keyspace
            ("cluster-require-full-coverage", "yes"),
            ("cluster-allow-reads-when-down", "no"),
            # a master keeps one replica before a spare one may migrate to an orphaned master
            ("cluster-migration-barrier", "1"),
        ],
    )


def pod_host(meta: Meta, pod: str) -> str:
    """The stable DNS name of a StatefulSet pod through the headless Service."""
    return f"{pod}.{NAME}-nodes.{meta.namespace}.svc"


def members(meta: Meta, spec: RedisSpec) -> str:
    """REDIS_NODES: every pod as host:port, in ordinal order (the first `masters` start as masters)."""
    return " ".join(f"{pod_host(meta, f'{NAME}-{index}')}:{PORT}" for index in range(spec.pods))


def rejoin_container(meta: Meta, spec: RedisSpec) -> dict[str, Any]:
    """cluster-rejoin.sh: meets members this node does not see, every 10 s; touches a heartbeat file.

    The members come from the `members` key of `redis-config`, not from the pod template: a
    scale-out updates the file in place instead of rolling every pod.
    """
    return {
        "name": "rejoin",
        "image": spec.image,
        "command": ["sh", f"{SCRIPTS_DIR}/cluster-rejoin.sh"],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "REDIS_SELF", "value": f"{pod_host(meta, '$(POD_NAME)')}:{PORT}"},
            {"name": "REDIS_NODES_FILE", "value": f"{CONF_DIR}/members"},
            {"name": "REDIS_RUN_DIR", "value": RUN_DIR},
            {"name": "REDIS_REJOIN_INTERVAL", "value": "10"},
            password_env("REDISCLI_AUTH"),
        ],
        "resources": HELPER_RESOURCES.render(),
        # the loop has run once
        "startupProbe": exec_probe(["test", "-f", HEARTBEAT], period=2, failure_threshold=30),
        # the loop ran within the last minute
        "readinessProbe": exec_probe(
            ["sh", "-c", f"find {HEARTBEAT} -mmin -1 | grep -q ."], period=10, failure_threshold=3
        ),
        # restarted when the loop has not come round for two minutes
        "livenessProbe": exec_probe(
            ["sh", "-c", f"find {HEARTBEAT} -mmin -2 | grep -q ."], period=30, failure_threshold=3
        ),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONF_DIR, "readOnly": True},
            {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
            {"name": "run", "mountPath": RUN_DIR},
        ],
    }


def failover_container(meta: Meta, spec: RedisSpec) -> dict[str, Any]:
    """failover-watch.sh: every 0.25 s, a replica checks that its master answers; touches a heartbeat file.

    It talks to its own node on loopback and to the masters at the pod IPs CLUSTER NODES lists.
    """
    return {
        "name": "failover-watch",
        "image": spec.image,
        "command": ["sh", f"{SCRIPTS_DIR}/failover-watch.sh"],
        "env": [
            {"name": "REDIS_SELF", "value": f"127.0.0.1:{PORT}"},
            {"name": "REDIS_RUN_DIR", "value": RUN_DIR},
            {"name": "REDIS_NODE_TIMEOUT_MS", "value": str(spec.node_timeout_ms)},
            {"name": "REDIS_WATCH_INTERVAL", "value": "0.25"},
            password_env("REDISCLI_AUTH"),
        ],
        "resources": HELPER_RESOURCES.render(),
        # the loop has run once
        "startupProbe": exec_probe(["test", "-f", WATCH_HEARTBEAT], period=2, failure_threshold=30),
        # the loop ran within the last minute
        "readinessProbe": exec_probe(
            ["sh", "-c", f"find {WATCH_HEARTBEAT} -mmin -1 | grep -q ."], period=10, failure_threshold=3
        ),
        # restarted when the loop has not come round for two minutes
        "livenessProbe": exec_probe(
            ["sh", "-c", f"find {WATCH_HEARTBEAT} -mmin -2 | grep -q ."], period=30, failure_threshold=3
        ),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
            {"name": "run", "mountPath": RUN_DIR},
        ],
    }


def affinity(meta: Meta, spec: RedisSpec) -> dict[str, Any]:
    """No two cluster pods on one node (required), or as few as possible (preferred)."""
    term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": meta.selector(NAME)}}
    if spec.anti_affinity == "required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
        }
    }


def disruption_budget(meta: Meta) -> dict[str, Any]:
    """One pod evicted at a time: every master keeps its replica or is one itself."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.metadata(NAME, COMPONENT),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": meta.selector(NAME)}},
    }


def bootstrap_job(meta: Meta, spec: RedisSpec) -> dict[str, Any]:
    """cluster-bootstrap.sh as a Job named after the shape (`redis-bootstrap-3x1`): a scale-out runs it anew."""
    container = {
        "name": "bootstrap",
        "image": spec.image,
        "command": ["sh", f"{SCRIPTS_DIR}/cluster-bootstrap.sh"],
        "env": [
            {"name": "REDIS_NODES", "value": members(meta, spec)},
            {"name": "REDIS_MASTERS", "value": str(spec.masters)},
            {"name": "REDIS_REPLICAS", "value": str(spec.replicas_per_master)},
            {"name": "REDIS_TIMEOUT_SECONDS", "value": "600"},
            {"name": "TMPDIR", "value": "/tmp"},
            password_env("REDISCLI_AUTH"),
        ],
        "resources": HELPER_RESOURCES.render(),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes = [
        {"name": "scripts", "configMap": {"name": f"{NAME}-scripts", "defaultMode": 0o555}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
    ]
    return job(
        meta,
        NAME,
        "bootstrap",
        f"{spec.masters}x{spec.replicas_per_master}",
        component="bootstrap",
        user=RUN_AS,
        containers=[container],
        volumes=volumes,
        backoff_limit=6,
        deadline_seconds=1200,
    )


def cluster_objects(meta: Meta, spec: RedisSpec, password: Any) -> list[dict[str, Any]]:
    """Secret, ConfigMaps, Services `redis` and `redis-nodes`, StatefulSet, PDB and the bootstrap Job."""
    conf = cluster_conf(spec)
    announce = ["--cluster-announce-hostname", pod_host(meta, "$(POD_NAME)")]
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    node = node_container(spec, announce, [pod_name, {"name": "REDIS_SELF", "value": f"127.0.0.1:{PORT}"}])
    # a master hands its slots to its replica before SIGTERM (node-stop.sh waits at most 10 s)
    node["lifecycle"] = {"preStop": {"exec": {"command": ["sh", f"{SCRIPTS_DIR}/node-stop.sh"]}}}
    helpers = [rejoin_container(meta, spec)]
    if spec.failover_watch:
        helpers.append(failover_container(meta, spec))
    pod_spec = {
        "containers": [node, *helpers],
        "volumes": pod_volumes(spec),
        "affinity": affinity(meta, spec),
        "topologySpreadConstraints": spread(meta.selector(NAME)),
    }
    return [
        auth_secret(meta, COMPONENT, password),
        *files_config_maps(meta, COMPONENT, {"redis.conf": conf, "members": members(meta, spec)}, SCRIPTS),
        headless_service(meta, COMPONENT),
        client_service(meta, COMPONENT),
        stateful_set(meta, spec, COMPONENT, conf, pod_spec),
        disruption_budget(meta),
        bootstrap_job(meta, spec),
    ]
