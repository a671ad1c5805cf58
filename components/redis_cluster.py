"""Redis Cluster (phase 4): one StatefulSet per shard (a master and its replicas), formed by a Job.

Shard S is the StatefulSet `redis-shard-S` of 1 + replicas_per_master pods (`redis-shard-S-0`
starts as its master). Its pods carry the label `scaleladder.dev/redis-shard: S`, and a required
pod anti-affinity on that label keeps them on different nodes: the scheduler, not luck, ensures
that losing a node never takes a master together with its replica. The bootstrap Job pairs
replicas with the master of their own shard, and redis.conf forbids replica migration, so a
failover only ever swaps roles inside a shard and the guarantee survives it.

Every pod announces its stable DNS name (`redis-shard-1-0.redis-nodes.<namespace>.svc`) and clients
are redirected by name (`cluster-preferred-endpoint-type hostname`), so a pod that comes back with
a new IP keeps both its identity (node ID in nodes.conf, on its volume) and its address. The
`rejoin` container reconnects members whose IPs all changed at once; the bootstrap Job creates
the cluster, and after a scale-out (a new shard) joins the new pods and rebalances slots.
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
    password_file_env,
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
WATCH_RESOURCES = Resources(cpu_request="25m", memory_request="16Mi", cpu_limit="200m", memory_limit="64Mi")
"""failover-watch runs redis-cli twice a second: about 1 % of a core in a master's pod, 2 % in a replica's
(measured on loopback)."""
HEARTBEAT = f"{RUN_DIR}/rejoin.alive"
WATCH_HEARTBEAT = f"{RUN_DIR}/failover-watch.alive"
SHARD_LABEL = "scaleladder.dev/redis-shard"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
"""Set by the StatefulSet controller on every pod: its ordinal (0 for every shard's first master)."""


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
            # a replica stays in its shard, whose pods the scheduler keeps on different nodes
            ("cluster-allow-replica-migration", "no"),
        ],
    )


def pod_host(meta: Meta, pod: str) -> str:
    """The stable DNS name of a StatefulSet pod through the headless Service."""
    return f"{pod}.{NAME}-nodes.{meta.namespace}.svc"


def shard_name(shard: int) -> str:
    """The StatefulSet of shard `shard`: `redis-shard-0`, `redis-shard-1`, ..."""
    return f"{NAME}-shard-{shard}"


def members(meta: Meta, spec: RedisSpec) -> str:
    """REDIS_NODES: every pod as host:port, shard by shard (each shard's pod 0 starts as its master)."""
    pods = [f"{shard_name(shard)}-{index}" for shard in range(spec.masters) for index in range(shard_size(spec))]
    return " ".join(f"{pod_host(meta, pod)}:{PORT}" for pod in pods)


def shard_size(spec: RedisSpec) -> int:
    """Pods per shard: the master and its replicas."""
    return 1 + spec.replicas_per_master


def heartbeat_probes(heartbeat: str) -> dict[str, Any]:
    """Probes of a sidecar loop that touches `heartbeat` every round: started once it has run,
    ready while it ran within the last minute, restarted when it has not come round for two."""
    return {
        "startupProbe": exec_probe(["test", "-f", heartbeat], period=2, failure_threshold=30),
        "readinessProbe": exec_probe(
            ["sh", "-c", f"find {heartbeat} -mmin -1 | grep -q ."], period=10, failure_threshold=3
        ),
        "livenessProbe": exec_probe(
            ["sh", "-c", f"find {heartbeat} -mmin -2 | grep -q ."], period=30, failure_threshold=3
        ),
    }


def rejoin_container(meta: Meta, spec: RedisSpec) -> dict[str, Any]:
    """cluster-rejoin.sh, every 10 s: meets members this node does not see, forgets members replaced
    by a new node, replicates its shard's master when it has no role; touches a heartbeat file.

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
            {"name": "REDIS_REPLICAS", "value": str(spec.replicas_per_master)},
            {"name": "REDIS_RUN_DIR", "value": RUN_DIR},
            {"name": "REDIS_REJOIN_INTERVAL", "value": "10"},
            password_file_env(),
        ],
        "resources": HELPER_RESOURCES.render(),
        **heartbeat_probes(HEARTBEAT),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONF_DIR, "readOnly": True},
            {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
            {"name": "run", "mountPath": RUN_DIR},
        ],
    }


def failover_container(spec: RedisSpec) -> dict[str, Any]:
    """failover-watch.sh: every 0.5 s, a replica checks that its master answers; touches a heartbeat file.

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
            {"name": "REDIS_WATCH_INTERVAL", "value": "0.5"},
            password_file_env(),
        ],
        "resources": WATCH_RESOURCES.render(),
        **heartbeat_probes(WATCH_HEARTBEAT),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
            {"name": "run", "mountPath": RUN_DIR},
        ],
    }


def affinity(meta: Meta, spec: RedisSpec, shard: int) -> dict[str, Any]:
    """The pods of one shard on different nodes: always (required) or when there are nodes enough (preferred)."""
    selector = {**meta.selector(NAME), SHARD_LABEL: str(shard)}
    term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector}}
    if spec.anti_affinity == "required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
        }
    }


def spread_constraints(meta: Meta) -> list[dict[str, Any]]:
    """The pods of one ordinal spread over nodes, and every cluster pod over zones.

    Spreading each ordinal makes the first masters (every shard's pod 0) prefer different nodes, so
    that losing one node leaves a majority of masters to elect its replacements, and spreads all
    pods over nodes as well. Best effort: a hard constraint could leave a shard's last pod with no
    node its anti-affinity allows, and roles change with every failover while the pods stay where
    they are. (The API server keys these constraints by topology key and `whenUnsatisfiable`: a
    second hostname constraint of the same kind would be rejected.)
    """
    by_node, by_zone = spread(meta.selector(NAME))
    return [{**by_node, "matchLabelKeys": [POD_INDEX_LABEL]}, by_zone]


def disruption_budget(meta: Meta) -> dict[str, Any]:
    """One cluster pod evicted at a time (over every shard): every master keeps its replica or is one itself."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.metadata(NAME, COMPONENT),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": meta.selector(NAME)}},
    }


def bootstrap_job(meta: Meta, spec: RedisSpec) -> dict[str, Any]:
    """cluster-bootstrap.sh as a Job; a scale-out (its `REDIS_MASTERS`, `REDIS_NODES`) runs it anew."""
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
            password_file_env(),
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
        component="bootstrap",
        user=RUN_AS,
        containers=[container],
        volumes=volumes,
        backoff_limit=6,
        deadline_seconds=1200,
    )


def shard_stateful_set(meta: Meta, spec: RedisSpec, conf: str, shard: int) -> dict[str, Any]:
    """The StatefulSet of one shard; shards differ only in their label and the anti-affinity on it."""
    announce = ["--cluster-announce-hostname", pod_host(meta, "$(POD_NAME)")]
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    node = node_container(spec, announce, [pod_name, {"name": "REDIS_SELF", "value": f"127.0.0.1:{PORT}"}])
    # a master hands its slots to its replica before SIGTERM (node-stop.sh waits at most 10 s)
    node["lifecycle"] = {"preStop": {"exec": {"command": ["sh", f"{SCRIPTS_DIR}/node-stop.sh"]}}}
    helpers = [rejoin_container(meta, spec)]
    if spec.failover_watch:
        helpers.append(failover_container(spec))
    pod_spec = {
        "containers": [node, *helpers],
        "volumes": pod_volumes(spec),
        "affinity": affinity(meta, spec, shard),
        "topologySpreadConstraints": spread_constraints(meta),
    }
    return stateful_set(
        meta,
        spec,
        COMPONENT,
        conf,
        pod_spec,
        object_name=shard_name(shard),
        replicas=shard_size(spec),
        labels={SHARD_LABEL: str(shard)},
    )


def cluster_objects(meta: Meta, spec: RedisSpec, password: Any) -> list[dict[str, Any]]:
    """Secret, ConfigMaps, Services `redis` and `redis-nodes`, a StatefulSet per shard, PDB, bootstrap Job."""
    conf = cluster_conf(spec)
    return [
        auth_secret(meta, COMPONENT, password),
        *files_config_maps(meta, COMPONENT, {"redis.conf": conf, "members": members(meta, spec)}, SCRIPTS),
        headless_service(meta, COMPONENT),
        client_service(meta, COMPONENT),
        *(shard_stateful_set(meta, spec, conf, shard) for shard in range(spec.masters)),
        disruption_budget(meta),
        bootstrap_job(meta, spec),
    ]
