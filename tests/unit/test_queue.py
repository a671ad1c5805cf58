"""The queue builder: its spec's errors, the cluster's Kubernetes objects and the job protocol's definitions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from components.labels import Meta
from components.queue import (
    QueueSpec,
    cluster_routes,
    jetstream_definitions,
    job_env,
    queue_objects,
    worker_scaler,
)
from components.settings import load

META = Meta(namespace="phase6", instance="phase6", version="0.1.0")
SCRIPT = Path(__file__).resolve().parents[2] / "components" / "scripts" / "queue" / "provision.py"


def spec_of(raw: dict[str, Any]) -> QueueSpec:
    spec, problems = load(QueueSpec, raw, "queue")
    assert spec is not None, problems
    return spec


def objects(raw: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    built = queue_objects(META, spec_of(raw or {}), provision_image="scaleladder/sample:0.1.0")
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in built}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"replicas": 4}, "scaleladder:queue.replicas: must be odd (a majority must survive a member's loss), got 4"),
        ({"replicas": 1}, "scaleladder:queue.replicas: must be >= 3, got 1"),
        ({"stream_replicas": 5}, "scaleladder:queue.stream_replicas: must be <= replicas (3), got 5"),
        ({"image": "nats:latest"}, "scaleladder:queue.image: must match nats:[0-9.]+(-alpine)?, got 'nats:latest'"),
        ({"storage_size": "ten"}, "scaleladder:queue.storage_size: must match [0-9]+(Mi|Gi|Ti), got 'ten'"),
        ({"consumer": {"max_deliver": 0}}, "scaleladder:queue.consumer.max_deliver: must be >= 1, got 0"),
        (
            {"jobs": {"max_megabytes": 9000}},
            "scaleladder:queue.jobs.max_megabytes: must be <= max_file_store_megabytes (8192), got 9000",
        ),
        (
            {"workers": {"min_replicas": 5, "max_replicas": 2}},
            "scaleladder:queue.workers.max_replicas: must be >= min_replicas (5), got 2",
        ),
        (
            {"workers": {"min_replicas": 0}},
            "scaleladder:queue.workers.min_replicas: must be >= 1 without keda (an HPA cannot scale to zero), got 0",
        ),
        ({"jobs": {"subject_prefix": "Jobs.x"}}, "scaleladder:queue.jobs.subject_prefix: must match"),
        ({"consumer": {"ackwait": 3}}, "scaleladder:queue.consumer.ackwait: unknown key; allowed keys here:"),
    ],
)
def test_bad_settings_name_the_key_the_value_and_the_rule(raw: dict[str, Any], expected: str) -> None:
    _, problems = load(QueueSpec, raw, "queue")
    messages = [str(problem) for problem in problems]
    assert any(message.startswith(expected) for message in messages), messages


def test_every_object_is_valid_on_kubernetes_1_34() -> None:
    built = objects()
    assert list(built) == [
        "ConfigMap/nats",
        "ConfigMap/nats-provision",
        "Service/nats-headless",
        "Service/nats",
        "StatefulSet/nats",
        "PodDisruptionBudget/nats",
        next(name for name in built if name.startswith("Job/nats-provision-")),
    ]
    for obj in built.values():
        kubernetes_validate.validate(obj, "1.34.0", strict=True)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "scaleladder"


def test_members_route_to_each_other_by_stable_dns_names() -> None:
    built = objects()
    conf = built["ConfigMap/nats"]["data"]["nats.conf"]
    routes = cluster_routes(META, spec_of({}))
    assert routes == [f"nats://nats-{i}.nats-headless.phase6.svc.cluster.local:6222" for i in range(3)]
    assert f"routes: [{', '.join(json.dumps(r) for r in routes)}]" in conf
    assert "server_name: $SERVER_NAME" in conf
    statefulset = built["StatefulSet/nats"]["spec"]
    assert (statefulset["serviceName"], statefulset["replicas"]) == ("nats-headless", 3)
    assert statefulset["podManagementPolicy"] == "Parallel"
    container = statefulset["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "SERVER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    assert container["image"] == "nats:2.15.1-alpine"
    assert built["Service/nats-headless"]["spec"]["publishNotReadyAddresses"] is True


def test_members_keep_jetstream_on_claims_and_are_probed_three_ways() -> None:
    statefulset = objects({"storage_class": "standard", "storage_size": "2Gi"})["StatefulSet/nats"]["spec"]
    (claim,) = statefulset["volumeClaimTemplates"]
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "2Gi"}},
        "storageClassName": "standard",
    }
    container = statefulset["template"]["spec"]["containers"][0]
    paths = [container[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert paths == ["/healthz", "/healthz?js-server-only=true", "/healthz?js-enabled-only=true"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_config_change_rolls_the_members_and_definition_change_reruns_provisioning() -> None:
    before, after = objects(), objects({"max_file_store_megabytes": 4096, "consumer": {"max_deliver": 7}})
    checksum = "scaleladder.dev/config-checksum"
    assert (
        before["StatefulSet/nats"]["spec"]["template"]["metadata"]["annotations"][checksum]
        != after["StatefulSet/nats"]["spec"]["template"]["metadata"]["annotations"][checksum]
    )
    assert {n for n in before if n.startswith("Job/")} != {n for n in after if n.startswith("Job/")}


def test_provisioning_configmap_carries_the_script_file_and_the_definitions() -> None:
    data = objects()["ConfigMap/nats-provision"]["data"]
    assert data["provision.py"] == SCRIPT.read_text()
    assert json.loads(data["jetstream.json"]) == jetstream_definitions(spec_of({}))


def test_definitions_wire_the_work_queue_its_consumer_and_dead_letters() -> None:
    definitions = jetstream_definitions(spec_of({"consumer": {"max_deliver": 4}}))
    jobs, dead, results = definitions["streams"]
    assert (jobs["name"], jobs["subjects"], jobs["retention"]) == ("JOBS", ["jobs.submit.>"], "workqueue")
    assert dead["subjects"] == ["jobs.dead.>", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.JOBS.workers"]
    assert (results["name"], results["allow_direct"]) == ("KV_JOB_RESULTS", False)
    (consumer,) = definitions["consumers"]
    assert consumer["stream_name"] == "JOBS"
    assert consumer["config"]["max_deliver"] == 4
    assert consumer["config"]["ack_policy"] == "explicit"


def test_job_env_names_the_protocol_for_the_service() -> None:
    assert {e["name"]: e["value"] for e in job_env(META, spec_of({}))} == {
        "NATS_URL": "nats://nats.phase6.svc.cluster.local:4222",
        "JOBS_STREAM": "JOBS",
        "JOBS_SUBJECT_PREFIX": "jobs",
        "JOBS_CONSUMER": "workers",
        "JOBS_MAX_DELIVER": "5",
        "JOBS_RESULTS_BUCKET": "JOB_RESULTS",
    }


def test_workers_scale_on_cpu_without_keda() -> None:
    hpa = worker_scaler(META, spec_of({"workers": {"min_replicas": 2}}), deployment="worker")
    kubernetes_validate.validate(hpa, "1.34.0", strict=True)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}
    assert hpa["spec"]["minReplicas"] == 2


def test_workers_scale_on_consumer_lag_with_keda() -> None:
    spec = spec_of({"workers": {"keda": True, "min_replicas": 0, "lag_threshold": 50}})
    scaled = worker_scaler(META, spec, deployment="worker")
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"] == {"name": "worker"}
    assert scaled["spec"]["minReplicaCount"] == 0
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger == {
        "type": "nats-jetstream",
        "metadata": {
            "natsServerMonitoringEndpoint": "nats-headless.phase6.svc.cluster.local:8222",
            "account": "$G",
            "stream": "JOBS",
            "consumer": "workers",
            "lagThreshold": "50",
            "useHttps": "false",
        },
    }
