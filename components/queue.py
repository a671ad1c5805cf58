"""The job queue: a NATS JetStream cluster, its streams and consumer, and how workers scale.

The cluster is a StatefulSet (3 members by default) whose pods find each other through a headless
Service's stable DNS names and keep their JetStream files on PersistentVolumeClaims. The job
protocol is data the kit provisions (`jetstream_definitions`), applied idempotently by
`scripts/queue/provision.py` in a Job:

- jobs are published to `<subject_prefix>.submit.<kind>` with header `Nats-Msg-Id: <job id>`
  (duplicates within the stream's window are dropped) into a work-queue stream;
- workers pull from one durable consumer, acknowledge only after the job's effect is committed,
  and get a job again when they do not acknowledge it within `ack_wait_seconds`;
- job status and results live in a key-value bucket, one key per job id: a worker commits its
  effect by a compare-and-set from the revision it read, so a redelivered job has one effect;
- after `max_deliver` failed attempts a worker republishes the job to
  `<subject_prefix>.dead.<kind>`; the dead-letter stream also captures JetStream's
  max-deliveries advisories, for jobs whose worker died on the last attempt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.labels import Meta
from components.pods import Resources, config_map, container_security, http_probe, job, pod_security, spread
from components.settings import setting
from components.web import RUN_AS as SAMPLE_USER

NAME = "nats"
IMAGE = "nats:2.15.1-alpine"
RUN_AS = 10006  # any uid: nats-server writes only to its JetStream volume
CLIENT_PORT = 4222
CLUSTER_PORT = 6222
MONITOR_PORT = 8222
STORE_DIR = "/data/jetstream"
CONFIG_DIR = "/etc/nats"
SCRIPTS = Path(__file__).parent / "scripts" / "queue"
PROVISION_DIR = "/etc/queue"
QUANTITY = r"[0-9]+(Mi|Gi|Ti)"
NANOS = 1_000_000_000
NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"


@dataclass(frozen=True)
class JobsStream:
    """The work-queue stream jobs are published to: a job is removed once a worker acknowledges it."""

    name: str = setting("JOBS", "stream name", pattern=NAME_PATTERN)
    subject_prefix: str = setting(
        "jobs", "jobs go to <prefix>.submit.<kind>, dead letters to <prefix>.dead.<kind>", pattern=r"[a-z][a-z0-9_-]*"
    )
    max_age_seconds: int = setting(
        7 * 86400, "a job never picked up is dropped after this long", minimum=60, maximum=365 * 86400
    )
    max_megabytes: int = setting(
        1024, "stream size cap; new jobs are refused beyond it", minimum=1, maximum=1024 * 1024
    )
    duplicate_window_seconds: int = setting(
        120, "a job id (Nats-Msg-Id) seen within this window is not enqueued again", minimum=1, maximum=86_400
    )


@dataclass(frozen=True)
class Consumer:
    """The durable pull consumer every worker shares."""

    durable: str = setting("workers", "consumer name", pattern=NAME_PATTERN)
    ack_wait_seconds: int = setting(
        30, "a job not acknowledged this long after delivery is delivered again", minimum=1, maximum=3600
    )
    max_deliver: int = setting(5, "deliveries of a job before it is dead-lettered", minimum=1, maximum=100)
    max_ack_pending: int = setting(
        256, "jobs handed out and not yet acknowledged, across all workers", minimum=1, maximum=100_000
    )


@dataclass(frozen=True)
class DeadLetters:
    """The stream that keeps jobs which failed `max_deliver` times, for inspection and replay."""

    name: str = setting("JOBS_DEAD", "stream name", pattern=NAME_PATTERN)
    max_age_seconds: int = setting(30 * 86400, "dead letters are kept this long", minimum=60, maximum=365 * 86400)


@dataclass(frozen=True)
class Results:
    """Key-value bucket of job status and result, read by the service's GET of a job."""

    bucket: str = setting("JOB_RESULTS", "bucket name", pattern=NAME_PATTERN)
    ttl_seconds: int = setting(
        7 * 86400, "a job's status is forgotten after this long", minimum=60, maximum=365 * 86400
    )
    history: int = setting(5, "revisions kept per job (queued, done, ...)", minimum=2, maximum=64)


@dataclass(frozen=True)
class WorkerScaling:
    """How the worker Deployment scales: KEDA on consumer lag where the cluster has KEDA, else HPA on CPU."""

    keda: bool = setting(False, "scale on the consumer's pending jobs with a KEDA ScaledObject")
    min_replicas: int = setting(1, "workers never fewer than this", minimum=0, maximum=100)
    max_replicas: int = setting(10, "workers never more than this", minimum=1, maximum=100)
    lag_threshold: int = setting(20, "KEDA: pending jobs per worker it aims for", minimum=1, maximum=100_000)
    cpu_utilization: int = setting(70, "HPA: target average CPU, percent of the request", minimum=10, maximum=100)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.max_replicas < self.min_replicas:
            yield "max_replicas", f"must be >= min_replicas ({self.min_replicas}), got {self.max_replicas}"
        if self.min_replicas == 0 and not self.keda:
            yield "min_replicas", "must be >= 1 without keda (an HPA cannot scale to zero), got 0"


@dataclass(frozen=True)
class QueueSpec:
    """The NATS JetStream cluster and the job protocol it carries."""

    enabled: bool = setting(False, "deploy the queue and its workers (phase 6 on)")
    image: str = setting(IMAGE, "NATS image, pinned to the version the tests run", pattern=r"nats:[0-9.]+(-alpine)?")
    replicas: int = setting(3, "cluster members; odd, so a majority survives losing one", minimum=3, maximum=7)
    resources: Resources = setting(Resources, "requests and limits of each NATS container")
    storage_size: str = setting("10Gi", "PersistentVolumeClaim size per member", pattern=QUANTITY)
    storage_class: str | None = setting(None, "StorageClass of the claims; null: the cluster default")
    max_memory_store_megabytes: int = setting(256, "JetStream memory storage cap per member", minimum=0, maximum=65_536)
    max_file_store_megabytes: int = setting(
        8192, "JetStream file storage cap per member", minimum=1, maximum=1024 * 1024
    )
    stream_replicas: int = setting(3, "copies of each stream (and the results bucket)", minimum=1, maximum=5)
    jobs: JobsStream = setting(JobsStream, "the jobs stream")
    consumer: Consumer = setting(Consumer, "the workers' consumer")
    dead_letters: DeadLetters = setting(DeadLetters, "the dead-letter stream")
    results: Results = setting(Results, "the job status and results bucket")
    workers: WorkerScaling = setting(WorkerScaling, "worker autoscaling")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.replicas % 2 == 0:
            yield "replicas", f"must be odd (a majority must survive a member's loss), got {self.replicas}"
        if self.stream_replicas > self.replicas:
            yield "stream_replicas", f"must be <= replicas ({self.replicas}), got {self.stream_replicas}"
        if self.jobs.max_megabytes > self.max_file_store_megabytes:
            yield (
                "jobs.max_megabytes",
                f"must be <= max_file_store_megabytes ({self.max_file_store_megabytes}), got {self.jobs.max_megabytes}",
            )


def headless_name() -> str:
    return f"{NAME}-headless"


def cluster_routes(meta: Meta, spec: QueueSpec) -> list[str]:
    """Each member's route URL by its stable DNS name: a restarted pod with a new IP rejoins."""
    domain = f"{headless_name()}.{meta.namespace}.svc.cluster.local"
    return [f"nats://{NAME}-{index}.{domain}:{CLUSTER_PORT}" for index in range(spec.replicas)]


def client_url(meta: Meta) -> str:
    """The URL the service and workers connect to (the client Service)."""
    return f"nats://{NAME}.{meta.namespace}.svc.cluster.local:{CLIENT_PORT}"


def job_env(meta: Meta, spec: QueueSpec) -> list[dict[str, str]]:
    """Environment the sample service's API and worker roles need to speak the job protocol."""
    values = {
        "NATS_URL": client_url(meta),
        "JOBS_STREAM": spec.jobs.name,
        "JOBS_SUBJECT_PREFIX": spec.jobs.subject_prefix,
        "JOBS_CONSUMER": spec.consumer.durable,
        "JOBS_MAX_DELIVER": str(spec.consumer.max_deliver),
        "JOBS_RESULTS_BUCKET": spec.results.bucket,
    }
    return [{"name": name, "value": value} for name, value in values.items()]


def nats_conf(
    spec: QueueSpec,
    *,
    routes: Sequence[str],
    host: str = "0.0.0.0",
    client_port: int = CLIENT_PORT,
    cluster_port: int = CLUSTER_PORT,
    monitor_port: int = MONITOR_PORT,
    store_dir: str = STORE_DIR,
) -> str:
    """nats-server's configuration; `$SERVER_NAME` comes from the environment (the pod's name)."""
    route_list = ", ".join(json.dumps(route) for route in routes)
    return "\n".join(
        [
            "server_name: $SERVER_NAME",
            f'listen: "{host}:{client_port}"',
            f'http: "{host}:{monitor_port}"',
            "jetstream {",
            f"  store_dir: {json.dumps(store_dir)}",
            f"  max_memory_store: {spec.max_memory_store_megabytes * 1024 * 1024}",
            f"  max_file_store: {spec.max_file_store_megabytes * 1024 * 1024}",
            "}",
            "cluster {",
            f'  name: "{NAME}"',
            f'  listen: "{host}:{cluster_port}"',
            f"  routes: [{route_list}]",
            "}",
            "",
        ]
    )


def jetstream_definitions(spec: QueueSpec) -> dict[str, Any]:
    """The JetStream API requests that provision the protocol: streams, the results bucket, the consumer."""
    jobs, dead, results = spec.jobs, spec.dead_letters, spec.results
    prefix = jobs.subject_prefix
    common = {"storage": "file", "num_replicas": spec.stream_replicas, "discard": "new"}
    advisories = "$JS.EVENT.ADVISORY.CONSUMER"
    return {
        "streams": [
            {
                **common,
                "name": jobs.name,
                "subjects": [f"{prefix}.submit.>"],
                "retention": "workqueue",
                "max_age": jobs.max_age_seconds * NANOS,
                "max_bytes": jobs.max_megabytes * 1024 * 1024,
                "duplicate_window": jobs.duplicate_window_seconds * NANOS,
            },
            {
                **common,
                "name": dead.name,
                "subjects": [
                    f"{prefix}.dead.>",
                    f"{advisories}.MAX_DELIVERIES.{jobs.name}.{spec.consumer.durable}",
                ],
                "retention": "limits",
                "discard": "old",
                "max_age": dead.max_age_seconds * NANOS,
            },
            {
                **common,
                "name": f"KV_{results.bucket}",
                "subjects": [f"$KV.{results.bucket}.>"],
                "retention": "limits",
                "max_age": results.ttl_seconds * NANOS,
                "max_msgs_per_subject": results.history,
                "allow_rollup_hdrs": True,
                "deny_delete": True,
                # reads go to the stream leader: a replica may not have applied a write it acknowledged
                "allow_direct": False,
            },
        ],
        "consumers": [
            {
                "stream_name": jobs.name,
                "config": {
                    "durable_name": spec.consumer.durable,
                    "ack_policy": "explicit",
                    "ack_wait": spec.consumer.ack_wait_seconds * NANOS,
                    "max_deliver": spec.consumer.max_deliver,
                    "max_ack_pending": spec.consumer.max_ack_pending,
                    "filter_subject": f"{prefix}.submit.>",
                    "deliver_policy": "all",
                },
            }
        ],
    }


def queue_objects(meta: Meta, spec: QueueSpec, *, provision_image: str) -> list[dict[str, Any]]:
    """ConfigMaps, headless and client Services, the StatefulSet, its PDB and the provisioning Job."""
    conf = nats_conf(spec, routes=cluster_routes(meta, spec))
    provision = provision_data(spec)
    return [
        config_map(meta.metadata(NAME, "queue"), {"nats.conf": conf}),
        config_map(meta.metadata(NAME, "queue", object_name=f"{NAME}-provision"), provision),
        headless_service(meta),
        client_service(meta),
        stateful_set(meta, spec, conf),
        disruption_budget(meta),
        provision_job(meta, provision, provision_image),
    ]


def provision_data(spec: QueueSpec) -> dict[str, str]:
    """The provisioning script and the definitions it applies, as they go into the ConfigMap."""
    return {
        "provision.py": (SCRIPTS / "provision.py").read_text(),
        "jetstream.json": json.dumps(jetstream_definitions(spec), indent=2, sort_keys=True) + "\n",
    }


def ports() -> list[dict[str, Any]]:
    return [
        {"name": "client", "containerPort": CLIENT_PORT},
        {"name": "cluster", "containerPort": CLUSTER_PORT},
        {"name": "monitor", "containerPort": MONITOR_PORT},
    ]


def headless_service(meta: Meta) -> dict[str, Any]:
    """Stable per-member DNS names; not-ready members are published too, so routes form at start."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(NAME, "queue", object_name=headless_name()),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": meta.selector(NAME),
            "ports": [
                {"name": port["name"], "port": port["containerPort"], "targetPort": port["name"], "protocol": "TCP"}
                for port in ports()
            ],
        },
    }


def client_service(meta: Meta) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(NAME, "queue"),
        "spec": {
            "selector": meta.selector(NAME),
            "ports": [{"name": "client", "port": CLIENT_PORT, "targetPort": "client", "protocol": "TCP"}],
        },
    }


def nats_container(spec: QueueSpec) -> dict[str, Any]:
    return {
        "name": NAME,
        "image": spec.image,
        "command": ["nats-server", "--config", f"{CONFIG_DIR}/nats.conf"],
        "env": [{"name": "SERVER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": ports(),
        "resources": spec.resources.render(),
        # JetStream may need minutes to recover its streams from disk and catch up with the others
        "startupProbe": http_probe("/healthz", "monitor", period=5, failure_threshold=60),
        # serves clients only while its JetStream is up
        "readinessProbe": http_probe("/healthz?js-server-only=true", "monitor", period=5, failure_threshold=3),
        # restarted only when the server itself stops answering for 60 s
        "livenessProbe": http_probe("/healthz?js-enabled-only=true", "monitor", period=20, failure_threshold=3),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "data", "mountPath": STORE_DIR.rsplit("/", 1)[0]},
        ],
    }


def stateful_set(meta: Meta, spec: QueueSpec, conf: str) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage_size}},
    }
    if spec.storage_class is not None:
        claim["storageClassName"] = spec.storage_class
    checksum = hashlib.sha256(conf.encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta.metadata(NAME, "queue"),
        "spec": {
            "serviceName": headless_name(),
            "replicas": spec.replicas,
            # all members start together: JetStream needs a majority before any member is healthy
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": meta.selector(NAME)},
            "template": {
                "metadata": {
                    "labels": meta.labels(NAME, "queue"),
                    "annotations": {"scaleladder.dev/config-checksum": checksum},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": pod_security(RUN_AS),
                    "containers": [nats_container(spec)],
                    "volumes": [{"name": "config", "configMap": {"name": NAME}}],
                    "topologySpreadConstraints": spread(meta.selector(NAME)),
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim}],
        },
    }


def disruption_budget(meta: Meta) -> dict[str, Any]:
    """One member down at a time: the other two keep a JetStream majority."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.metadata(NAME, "queue"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": meta.selector(NAME)}},
    }


def provision_job(meta: Meta, provision: dict[str, str], image: str) -> dict[str, Any]:
    """Applies the definitions (create, or update in place); a change to them or to the image reruns it."""
    digest = hashlib.sha256("".join(provision.values()).encode()).hexdigest()[:8]
    container = {
        "name": "provision",
        "image": image,
        "command": ["python", f"{PROVISION_DIR}/provision.py", f"{PROVISION_DIR}/jetstream.json"],
        "env": [{"name": "NATS_URL", "value": client_url(meta)}],
        "resources": Resources(cpu_limit="200m", memory_limit="128Mi").render(),
        "securityContext": container_security(),
        "volumeMounts": [{"name": "provision", "mountPath": PROVISION_DIR, "readOnly": True}],
    }
    return job(
        meta,
        NAME,
        "provision",
        ran_for=digest,  # the definitions it applies are in a ConfigMap, not in its spec
        component="provisioning",
        user=SAMPLE_USER,
        containers=[container],
        volumes=[{"name": "provision", "configMap": {"name": f"{NAME}-provision"}}],
        backoff_limit=10,
        deadline_seconds=900,
    )


def worker_scaler(meta: Meta, spec: QueueSpec, *, deployment: str) -> dict[str, Any]:
    """What scales the worker Deployment `deployment`: a KEDA ScaledObject on consumer lag, or an HPA on CPU.

    The Deployment must leave `spec.replicas` unset. KEDA reads the consumer's pending jobs from
    the monitoring port; in a cluster it asks the member leading the consumer, reached as
    `<server name>.<headless Service>`, which is why server names are the pod names.
    """
    workers = spec.workers
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}
    metadata = meta.metadata(deployment, "worker")
    if workers.keda:
        endpoint = f"{headless_name()}.{meta.namespace}.svc.cluster.local:{MONITOR_PORT}"
        return {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": metadata,
            "spec": {
                "scaleTargetRef": {"name": deployment},
                "minReplicaCount": workers.min_replicas,
                "maxReplicaCount": workers.max_replicas,
                "pollingInterval": 10,
                "cooldownPeriod": 120,
                "triggers": [
                    {
                        "type": "nats-jetstream",
                        "metadata": {
                            "natsServerMonitoringEndpoint": endpoint,
                            "account": "$G",
                            "stream": spec.jobs.name,
                            "consumer": spec.consumer.durable,
                            "lagThreshold": str(workers.lag_threshold),
                            "useHttps": "false",
                        },
                    }
                ],
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": target,
            "minReplicas": workers.min_replicas,
            "maxReplicas": workers.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": workers.cpu_utilization},
                    },
                }
            ],
        },
    }
