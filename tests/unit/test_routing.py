"""The front door: Gateway API route with its traffic policy, or a plain Ingress."""

from __future__ import annotations

import pytest

from components import cli, validation
from components.config import from_values
from components.labels import Meta
from components.routing import PathRoute, RoutingSpec, routing_objects
from components.settings import ConfigError

META = Meta(namespace="ns", instance="phase3", version="0.0.0")


def test_gateway_route_attaches_to_the_shared_gateway_with_timeouts() -> None:
    route, policy = routing_objects(META, RoutingSpec(kind="gateway"), "web", 80)
    assert route["kind"] == "HTTPRoute"
    assert route["spec"]["parentRefs"] == [{"name": "edge", "namespace": "scaleladder-gateway"}]
    assert route["spec"]["hostnames"] == ["phase3.localtest.me"]
    rule = route["spec"]["rules"][-1]
    assert rule["backendRefs"] == [{"name": "web", "port": 80}]
    assert rule["timeouts"] == {"request": "15s", "backendRequest": "5s"}
    assert policy["kind"] == "BackendTrafficPolicy"
    assert policy["spec"]["targetRefs"][0]["name"] == "web"
    assert policy["spec"]["retry"]["numRetries"] == 2
    assert policy["spec"]["rateLimit"]["local"]["rules"][0]["limit"] == {"requests": 1000, "unit": "Second"}


def test_no_policy_when_retries_and_limits_are_off() -> None:
    objects = routing_objects(META, RoutingSpec(kind="gateway", retries=0, rate_limit_per_second=0), "web", 80)
    assert [obj["kind"] for obj in objects] == ["HTTPRoute"]


def test_ingress_alternative_uses_the_configured_class() -> None:
    ingress, _ = routing_objects(
        META, RoutingSpec(kind="ingress", ingress_class="traefik", hostname="shop.example.com"), "web", 80
    )
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "traefik"
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "shop.example.com"
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": "web", "port": {"number": 80}}}


def test_phases_without_a_front_door_render_nothing() -> None:
    assert routing_objects(META, RoutingSpec(), "web", 80) == []


def test_backend_timeout_longer_than_the_request_is_refused() -> None:
    spec = RoutingSpec(kind="gateway", request_timeout_seconds=5, backend_timeout_seconds=10)
    assert list(spec.problems()) == [("backend_timeout_seconds", "must be <= request_timeout_seconds (5), got 10")]


CACHE = (PathRoute("edge-cache", 80, ("/products", "/static/"), reads_only=True),)


def test_reads_of_cacheable_prefixes_go_through_the_cache() -> None:
    route, _ = routing_objects(META, RoutingSpec(kind="gateway"), "web", 80, CACHE)
    rules = route["spec"]["rules"][2:]  # after the two stream rules
    assert [(r["matches"][0]["path"]["value"], r["backendRefs"][0]["name"]) for r in rules] == [
        ("/products", "edge-cache"),
        ("/static", "edge-cache"),  # whole path segments: the trailing slash goes
        ("/", "web"),
    ]
    assert [m["method"] for m in rules[0]["matches"]] == ["GET", "HEAD"]
    assert "method" not in rules[-1]["matches"][0]  # writes, and every other path, reach the service


def test_an_ingress_sends_cacheable_prefixes_to_the_cache_for_every_method() -> None:
    ingress, _ = routing_objects(META, RoutingSpec(kind="ingress"), "web", 80, CACHE)
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == [
        ("/products", "edge-cache"),
        ("/static", "edge-cache"),
        ("/", "web"),
    ]


ROLES = (
    PathRoute("edge-cache", 80, ("/", "/events"), reads_only=True),
    PathRoute("catalog", 80, ("/products", "/events", "/ws")),
)


def test_streams_have_no_request_timeout_and_never_reach_the_cache() -> None:
    route, _ = routing_objects(META, RoutingSpec(kind="gateway"), "front", 80, ROLES)
    streams = [rule for rule in route["spec"]["rules"] if rule["matches"][0]["path"]["value"] in ("/ws", "/events")]
    assert [(rule["matches"], rule["backendRefs"], rule["timeouts"]) for rule in streams] == [
        ([{"path": {"type": "PathPrefix", "value": "/ws"}}], [{"name": "catalog", "port": 80}], {"request": "0s"}),
        ([{"path": {"type": "PathPrefix", "value": "/events"}}], [{"name": "catalog", "port": 80}], {"request": "0s"}),
    ]


def test_streams_without_an_owner_go_to_the_default_service() -> None:
    route, _ = routing_objects(META, RoutingSpec(kind="gateway"), "web", 80)
    first, second = route["spec"]["rules"][:2]
    assert [(r["matches"][0]["path"]["value"], r["backendRefs"][0]["name"]) for r in (first, second)] == [
        ("/ws", "web"),
        ("/events", "web"),
    ]


def test_an_ingress_puts_streams_in_a_second_ingress_with_long_nginx_timeouts() -> None:
    main, streams = routing_objects(META, RoutingSpec(kind="ingress", stream_idle_timeout_seconds=7200), "f", 80, ROLES)
    main_paths = [p["path"] for p in main["spec"]["rules"][0]["http"]["paths"]]
    assert "/ws" not in main_paths and "/events" not in main_paths
    assert streams["metadata"]["name"] == "f-streams"
    assert streams["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "7200",
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "7200",
    }
    assert streams["spec"]["rules"][0]["host"] == main["spec"]["rules"][0]["host"]
    paths = streams["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == [("/ws", "catalog"), ("/events", "catalog")]


def test_both_ingresses_are_schema_valid() -> None:
    objects = routing_objects(META, RoutingSpec(kind="ingress"), "front", 80, ROLES)
    assert validation.problems(objects) == []


def test_a_stream_idle_timeout_under_a_minute_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        from_values({"phase": 3, "routing": {"stream_idle_timeout_seconds": 30}})
    assert [str(problem) for problem in caught.value.problems] == [
        "scaleladder:routing.stream_idle_timeout_seconds: must be >= 60, got 30"
    ]


@pytest.mark.parametrize(("stack", "owner"), [("phase5", "web"), ("phase6", "catalog")])
def test_the_stacks_with_an_edge_cache_route_streams_past_it(stack: str, owner: str) -> None:
    (route,) = [o for o in cli.load_stack(stack).objects() if o["kind"] == "HTTPRoute"]
    streams = {
        rule["matches"][0]["path"]["value"]: rule
        for rule in route["spec"]["rules"]
        if rule["matches"][0]["path"]["value"] in ("/ws", "/events")
    }
    assert set(streams) == {"/ws", "/events"}
    for rule in streams.values():
        assert rule["backendRefs"] == [{"name": owner, "port": 80}]  # never edge-cache
        assert rule["timeouts"] == {"request": "0s"}
    assert any(ref["name"] == "edge-cache" for rule in route["spec"]["rules"] for ref in rule["backendRefs"])
