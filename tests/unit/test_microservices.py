"""Phase 6's role split: each role a tier behind an Envoy sidecar, upstreams by headless Service."""

from __future__ import annotations

import pytest

from components import circuit_breaker, microservices, queue, validation, web
from components.circuit_breaker import Streams
from components.config import from_values
from components.labels import Meta
from components.microservices import ROLES, MicroservicesSpec, role_objects, sidecar_spec, worker_objects
from components.realtime import Realtime
from components.settings import ConfigError

META = Meta(namespace="ns", instance="phase6", version="0.0.0")
ENV = [{"name": "DATABASE_URL", "value": "postgresql://app@pgbouncer:6432/app"}]
ORDERS = next(role for role in ROLES if role.name == "orders")
AUTOSCALED = web.WebSpec(autoscaling=web.Autoscaling(enabled=True))


def by_kind(objects: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for obj in objects:
        found.setdefault(obj["kind"], []).append(obj)
    return found


def test_a_caller_reaches_each_callee_through_a_local_listener_to_its_pods() -> None:
    (upstream,) = sidecar_spec(META, MicroservicesSpec(), ORDERS, Streams()).upstreams
    assert (upstream.name, upstream.local_port) == ("catalog", 15001)
    # the callee's pods, one by one (ejectable), on their own sidecar's inbound listener
    assert upstream.host == "catalog-pods.ns.svc.cluster.local"
    assert upstream.port == MicroservicesSpec().inbound.port


def test_role_tier_runs_the_sidecar_first_and_its_service_targets_the_inbound_listener() -> None:
    built = role_objects(META, AUTOSCALED, MicroservicesSpec(), ORDERS, ENV, stream_idle_seconds=3600)
    objects = by_kind(built)
    (deployment,) = objects["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == [circuit_breaker.NAME]
    assert pod["initContainers"][0]["restartPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["ROLE"] == "orders" and env["CATALOG_URL"] == "http://127.0.0.1:15001"
    service, headless = sorted(objects["Service"], key=lambda s: s["metadata"]["name"])
    assert service["spec"]["ports"][0]["targetPort"] == "inbound"
    assert (headless["metadata"]["name"], headless["spec"]["clusterIP"]) == ("orders-pods", "None")
    assert {o["kind"] for o in built} >= {
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    assert validation.problems(built) == []


def test_a_role_that_calls_nobody_still_sheds_load_on_its_inbound_side() -> None:
    catalog = next(role for role in ROLES if role.name == "catalog")
    spec = sidecar_spec(META, MicroservicesSpec(), catalog, Streams())
    assert spec.upstreams == () and spec.inbound.max_requests > 0


def test_workers_have_no_service_and_scale_on_the_queue() -> None:
    objects = by_kind(worker_objects(META, AUTOSCALED, queue.QueueSpec(enabled=True), ENV))
    assert "Service" not in objects
    (deployment,) = objects["Deployment"]
    assert "replicas" not in deployment["spec"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["worker"]
    assert {"name": "ROLE", "value": microservices.WORKER} in container["env"]
    assert objects["HorizontalPodAutoscaler"][0]["spec"]["scaleTargetRef"]["name"] == microservices.WORKER


def test_roles_own_distinct_prefixes() -> None:
    prefixes = [prefix for role in ROLES for prefix in role.paths]
    assert len(prefixes) == len(set(prefixes))
    assert {callee for role in ROLES for callee in role.calls} <= {role.name for role in ROLES}


def test_the_gateway_routes_by_the_services_own_path_table() -> None:
    from sample import roles  # the sample service's package: its table is the source of truth

    kit = {role.name: role.paths for role in ROLES} | {microservices.WORKER: ()}
    assert kit == roles.PATHS


def test_only_the_role_owning_the_stream_paths_carries_streams() -> None:
    streams = Streams(("/ws", "/events"), max_connections=500, idle_timeout_seconds=600)
    carried = {role.name: sidecar_spec(META, MicroservicesSpec(), role, streams).streams for role in ROLES}
    assert carried["catalog"] == Streams(("/events", "/ws"), 500, 600)
    assert carried["auth"].prefixes == carried["orders"].prefixes == ()


def test_the_stream_role_scales_on_connections_and_cpu_through_keda() -> None:
    spec = MicroservicesSpec(enabled=True, scale_on_connections=True)
    web_spec = web.WebSpec(
        autoscaling=web.Autoscaling(enabled=True, min_replicas=3, max_replicas=9, cpu_utilization=60),
        realtime=Realtime(max_connections=2000, target_connections=1500),
    )
    built = {
        role.name: by_kind(role_objects(META, web_spec, spec, role, ENV, stream_idle_seconds=60)) for role in ROLES
    }
    catalog = built["catalog"]
    assert "HorizontalPodAutoscaler" not in catalog and "PodDisruptionBudget" in catalog
    assert "replicas" not in catalog["Deployment"][0]["spec"]
    (scaled,) = catalog["ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"] == {"name": "catalog"}
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (3, 9)
    assert scaled["spec"]["triggers"] == [
        {
            "type": "metrics-api",
            "metricType": "AverageValue",
            "metadata": {
                "url": "http://catalog.ns.svc.cluster.local/realtime/connections",
                "format": "json",
                "valueLocation": "total",
                "targetValue": "1500",
            },
        },
        {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}},
    ]
    assert all(
        "HorizontalPodAutoscaler" in built[name] and "ScaledObject" not in built[name] for name in ("auth", "orders")
    )


def test_without_connection_scaling_the_stream_role_has_its_hpa() -> None:
    catalog = next(role for role in ROLES if role.name == "catalog")
    objects = by_kind(role_objects(META, AUTOSCALED, MicroservicesSpec(), catalog, ENV, stream_idle_seconds=60))
    assert "ScaledObject" not in objects and len(objects["HorizontalPodAutoscaler"]) == 1


def test_connection_scaling_needs_the_web_autoscaling_bounds() -> None:
    values = {"phase": 6, "web": {"autoscaling": {"enabled": False}}}
    with pytest.raises(ConfigError) as caught:
        from_values(values)
    assert [str(problem) for problem in caught.value.problems] == [
        "scaleladder:microservices.scale_on_connections: needs web.autoscaling.enabled: true (KEDA scales between "
        "its min_replicas and max_replicas)"
    ]


def test_phase6_scales_the_catalog_on_connections_by_default() -> None:
    assert from_values({"phase": 6}).microservices.scale_on_connections
    assert not from_values({"phase": 5}).microservices.scale_on_connections
