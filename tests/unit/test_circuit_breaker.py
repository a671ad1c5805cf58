"""The Envoy sidecar builder: its spec's errors, its bootstrap and its Kubernetes objects."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from components.circuit_breaker import (
    IMAGE,
    Inbound,
    SidecarSpec,
    Streams,
    Upstream,
    circuit_breaker_sidecar,
    duration,
    envoy_config,
    sidecar_volume,
    upstream_env,
)
from components.labels import Meta
from components.settings import load

META = Meta(namespace="phase6", instance="phase6", version="0.1.0")
CATALOG = {"name": "catalog", "host": "catalog-headless.phase6.svc.cluster.local", "port": 8080, "local_port": 15001}


def messages(raw: Any) -> list[str]:
    spec, problems = load(SidecarSpec, raw, "mesh.sidecar")
    assert spec is None
    return [str(problem) for problem in problems]


def test_defaults_and_a_typed_upstream_load() -> None:
    spec, problems = load(SidecarSpec, {"upstreams": [{**CATALOG, "breaker": {"max_requests": 10}}]})
    assert problems == []
    assert spec is not None
    assert spec.upstreams[0].breaker.max_requests == 10
    assert spec.image == IMAGE


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"upstreams": [{**CATALOG, "breaker": {"max_requests": 0}}]},
            "scaleladder:mesh.sidecar.upstreams[0].breaker.max_requests: must be >= 1, got 0",
        ),
        (
            {"upstreams": [{**CATALOG, "outlier": {"max_ejection_percent": 101}}]},
            "scaleladder:mesh.sidecar.upstreams[0].outlier.max_ejection_percent: must be <= 100, got 101",
        ),
        (
            {"upstreams": [{"name": "catalog", "local_port": 15001}]},
            "scaleladder:mesh.sidecar.upstreams[0].host: is required",
        ),
        (
            {"upstreams": [{**CATALOG, "host": "Catalog_Service"}]},
            "scaleladder:mesh.sidecar.upstreams[0].host: must match",
        ),
        (
            {"upstreams": [{**CATALOG, "request_timeout_ms": 500, "retry": {"per_try_timeout_ms": 800}}]},
            "scaleladder:mesh.sidecar.upstreams[0].retry.per_try_timeout_ms: "
            "must be <= request_timeout_ms (500), got 800",
        ),
        (
            {"upstreams": [CATALOG, {**CATALOG, "local_port": 15002}]},
            "scaleladder:mesh.sidecar.upstreams[1].name: must be unique, got 'catalog' twice",
        ),
        (
            {"upstreams": [CATALOG, {**CATALOG, "name": "orders"}]},
            "scaleladder:mesh.sidecar.upstreams[1].local_port: "
            "must be unique, got 15001 (also upstreams[0].local_port)",
        ),
        (
            {"upstreams": [{**CATALOG, "local_port": 9901}]},
            "scaleladder:mesh.sidecar.upstreams[0].local_port: must be unique, got 9901 (also admin_port)",
        ),
        (
            {"upstreams": [{**CATALOG, "retry": {"retry_on": "5xx;reset"}}]},
            "scaleladder:mesh.sidecar.upstreams[0].retry.retry_on: must match",
        ),
        ({"image": "envoyproxy/envoy:latest"}, "scaleladder:mesh.sidecar.image: must match"),
        (
            {"inbound": {"app_port": 15006}},
            "scaleladder:mesh.sidecar.inbound.app_port: must be unique, got 15006 (also inbound.port)",
        ),
        ({"upstreams": [{**CATALOG, "timeout": 3}]}, "scaleladder:mesh.sidecar.upstreams[0].timeout: unknown key"),
    ],
)
def test_bad_settings_name_the_key_the_value_and_the_rule(raw: dict[str, Any], expected: str) -> None:
    assert any(message.startswith(expected) for message in messages(raw)), messages(raw)


def sidecar_spec() -> SidecarSpec:
    spec, problems = load(SidecarSpec, {"upstreams": [CATALOG, {**CATALOG, "name": "orders", "local_port": 15002}]})
    assert spec is not None, problems
    return spec


def test_each_upstream_has_its_cluster_breakers_outlier_detection_and_local_listener() -> None:
    config = envoy_config(sidecar_spec())
    clusters = {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}
    assert list(clusters) == ["admin", "inbound_app", "catalog", "orders"]
    catalog = clusters["catalog"]
    assert catalog["type"] == "STRICT_DNS"
    threshold = catalog["circuit_breakers"]["thresholds"][0]
    assert threshold == {
        "priority": "DEFAULT",
        "max_connections": 64,
        "max_pending_requests": 32,
        "max_requests": 128,
        "retry_budget": {"budget_percent": {"value": 20.0}, "min_retry_concurrency": 3},
    }
    assert catalog["outlier_detection"]["base_ejection_time"] == "10s"
    assert catalog["outlier_detection"]["enforcing_consecutive_gateway_failure"] == 100
    assert catalog["common_lb_config"] == {"healthy_panic_threshold": {"value": 0}}
    listeners = {listener["name"]: listener for listener in config["static_resources"]["listeners"]}
    outbound = listeners["outbound_catalog"]
    assert outbound["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15001}
    route = outbound["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["route"]["timeout"] == "3s"
    assert route["route"]["retry_policy"]["num_retries"] == 2


def test_without_a_retry_budget_max_retries_caps_retries() -> None:
    spec, _ = load(SidecarSpec, {"upstreams": [{**CATALOG, "retry": {"budget_percent": 0}}]})
    assert spec is not None
    threshold = envoy_config(spec)["static_resources"]["clusters"][2]["circuit_breakers"]["thresholds"][0]
    assert threshold["max_retries"] == 3
    assert "retry_budget" not in threshold


def test_admin_listens_on_loopback_and_only_ready_is_exposed() -> None:
    config = envoy_config(sidecar_spec())
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    health = config["static_resources"]["listeners"][0]
    routes = health["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert routes == [{"match": {"path": "/ready"}, "route": {"cluster": "admin", "timeout": "1s"}}]


def test_sidecar_is_a_native_sidecar_in_a_valid_pod() -> None:
    spec = sidecar_spec()
    container, config_map = circuit_breaker_sidecar(META, spec, app="orders")
    assert container["restartPolicy"] == "Always"
    assert container["image"] == "envoyproxy/envoy:v1.40.0"
    probes = [container[key] for key in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert len({repr(probe) for probe in probes}) == 3
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert yaml.safe_load(config_map["data"]["envoy.yaml"]) == envoy_config(spec)
    assert config_map["metadata"]["name"] == "orders-circuit-breaker"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": META.metadata("orders", "server"),
        "spec": {
            "initContainers": [container],
            "containers": [{"name": "app", "image": "scaleladder/sample:0.1.0"}],
            "volumes": [sidecar_volume("orders")],
        },
    }
    for obj in (pod, config_map):
        kubernetes_validate.validate(obj, "1.34.0", strict=True)


def test_upstream_defaults_are_rejected_until_named() -> None:
    assert [key for key, _ in Upstream().problems()] == ["name", "host", "local_port"]


@pytest.mark.parametrize(("ms", "text"), [(1, "0.001s"), (250, "0.25s"), (3000, "3s"), (1234567, "1234.567s")])
def test_durations_are_exact(ms: int, text: str) -> None:
    assert duration(ms) == text


def test_the_app_calls_each_upstream_at_its_local_listener() -> None:
    assert upstream_env(sidecar_spec()) == [
        {"name": "CATALOG_URL", "value": "http://127.0.0.1:15001"},
        {"name": "ORDERS_URL", "value": "http://127.0.0.1:15002"},
    ]


def inbound_manager(config: dict) -> dict:
    (inbound,) = [listener for listener in config["static_resources"]["listeners"] if listener["name"] == "inbound"]
    return inbound["filter_chains"][0]["filters"]


def test_streams_are_upgraded_untimed_and_on_a_cluster_of_their_own() -> None:
    spec = SidecarSpec(inbound=Inbound(max_connections=100), streams=Streams(("/ws",), 500, 600))
    config = envoy_config(spec)
    limit, manager = inbound_manager(config)
    assert limit["typed_config"]["max_connections"] == 600  # ordinary connections, plus the app's streams
    assert manager["typed_config"]["upgrade_configs"] == [{"upgrade_type": "websocket"}]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0] == {
        "match": {"path_separated_prefix": "/ws"},
        "route": {"cluster": "inbound_streams", "timeout": "0s", "idle_timeout": "600s"},
    }
    assert routes[-1]["route"]["cluster"] == "inbound_app"
    (streams,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "inbound_streams"]
    threshold = streams["circuit_breakers"]["thresholds"][0]
    assert (threshold["max_connections"], threshold["max_requests"]) == (500, 500)


def test_without_streams_upgrades_stay_refused() -> None:
    config = envoy_config(SidecarSpec())
    _, manager = inbound_manager(config)
    assert "upgrade_configs" not in manager["typed_config"]
    assert "inbound_streams" not in [c["name"] for c in config["static_resources"]["clusters"]]
