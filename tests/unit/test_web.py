"""The web tier builder: what each phase's settings turn into."""

from __future__ import annotations

from components.labels import Meta
from components.web import Autoscaling, WebSpec, migrate_job, web_objects

META = Meta(namespace="ns", instance="test", version="0.0.0")
ENV = [{"name": "DATABASE_URL", "value": "postgresql://app@db:5432/app"}]


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {obj["kind"]: obj for obj in objects}


def test_fixed_replicas_without_autoscaling() -> None:
    objects = by_kind(web_objects(META, WebSpec(replicas=3), ENV))
    assert set(objects) == {"Deployment", "Service"}
    assert objects["Deployment"]["spec"]["replicas"] == 3


def test_autoscaled_tier_leaves_replicas_to_the_hpa_and_gets_a_budget() -> None:
    spec = WebSpec(autoscaling=Autoscaling(enabled=True, min_replicas=3, max_replicas=7, cpu_utilization=60))
    objects = by_kind(web_objects(META, spec, ENV))
    assert set(objects) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert "replicas" not in objects["Deployment"]["spec"]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 7)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    pdb = objects["PodDisruptionBudget"]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"] == objects["Deployment"]["spec"]["selector"]


def test_pods_are_hardened_and_probed_three_ways() -> None:
    deployment = by_kind(web_objects(META, WebSpec(), ENV))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    probes = {key: container[key]["httpGet"]["path"] for key in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes == {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    assert container["readinessProbe"] != container["livenessProbe"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert container["env"][: len(ENV)] == ENV


def test_service_selects_the_pods_but_not_by_version() -> None:
    objects = by_kind(web_objects(META, WebSpec(), ENV))
    selector = objects["Service"]["spec"]["selector"]
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert "app.kubernetes.io/version" not in selector


def test_each_image_migrates_in_its_own_job() -> None:
    first = migrate_job(META, WebSpec(image="scaleladder/sample:1.0.0"), ENV)
    again = migrate_job(META, WebSpec(image="scaleladder/sample:1.0.0"), ENV)
    other = migrate_job(META, WebSpec(image="scaleladder/sample:1.1.0"), ENV)
    assert first["metadata"]["name"] == again["metadata"]["name"] != other["metadata"]["name"]
    assert first["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_extra_env_is_appended_in_a_stable_order() -> None:
    spec = WebSpec(env={"B_SWITCH": "1", "A_SWITCH": "0"})
    container = by_kind(web_objects(META, spec, ENV))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in container["env"]] == [
        "DATABASE_URL",
        "REALTIME_MAX_CONNECTIONS",
        "DRAIN_BATCH_PERCENT",
        "DRAIN_BATCH_INTERVAL_MS",
        "WS_COMPRESSION",
        "A_SWITCH",
        "B_SWITCH",
    ]
