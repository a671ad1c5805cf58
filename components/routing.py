"""How traffic reaches the web tier: a Gateway API HTTPRoute (default), or a plain Ingress.

The route attaches to the cluster layer's shared Gateway. Timeouts live on the route; retries and
rate limiting at the edge are Envoy Gateway's BackendTrafficPolicy, attached to the route. For
clusters that only run an Ingress controller, `routing.kind: ingress` renders a
`networking.k8s.io/v1` Ingress with a configurable class instead (no retries or rate limits:
those are controller-specific annotations, left to the operator).

The long-lived paths (`realtime.STREAM_PATHS`: WebSocket `/ws`, server-sent events `/events`) have
rules of their own, always straight to the service that owns them, never through the edge cache.
Envoy Gateway carries WebSocket upgrades on every route by default, and ingress-nginx proxies
them natively; what would cut a stream is a timeout, so: on the HTTPRoute the stream rules have
no request timeout (`request: 0s`; Gateway API allows `backendRequest` to be left out), and the
route's retries cannot touch an open stream: Envoy retries only before the response has started
and ignores the per-try timeout once it has, so a retry only ever repeats a refused handshake,
which then reaches another pod (tests/integration/test_envoy_stream_retries.py runs that route
shape under a real Envoy). An idle stream is bounded by Envoy's stream idle timeout (5 minutes
unless a ClientTrafficPolicy changes it), far above the service's heartbeat
(`EVENTS_HEARTBEAT_SECONDS`, 15 s). With an Ingress, the stream paths are a second Ingress
(`<service>-streams`, since annotations are per Ingress) whose ingress-nginx read and send
timeouts are `routing.stream_idle_timeout_seconds` instead of nginx's 60 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from components.cluster_layer import GATEWAY_NAME, GATEWAY_NAMESPACE
from components.labels import Meta
from components.realtime import STREAM_PATHS
from components.settings import setting

DNS_NAME = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"


@dataclass(frozen=True)
class RoutingSpec:
    """The stack's front door. Phases 1-2 have none (reach them with `kubectl port-forward`)."""

    kind: Literal["none", "gateway", "ingress"] = setting("none", "what exposes the web Service (phase 3 on: gateway)")
    hostname: str = setting(
        "", "host the route answers; empty: <stack>.localtest.me (resolves to 127.0.0.1)", pattern=f"({DNS_NAME})?"
    )
    gateway_name: str = setting(GATEWAY_NAME, "the shared Gateway the cluster layer created")
    gateway_namespace: str = setting(GATEWAY_NAMESPACE, "namespace of that Gateway")
    ingress_class: str = setting("nginx", "IngressClass, when kind is ingress")
    request_timeout_seconds: int = setting(
        15, "whole request, retries included, before the edge answers 504", minimum=1, maximum=300
    )
    backend_timeout_seconds: int = setting(
        5, "one attempt at a backend before it counts as failed", minimum=1, maximum=300
    )
    retries: int = setting(2, "extra attempts on connection failures and 502/503/504", minimum=0, maximum=5)
    stream_idle_timeout_seconds: int = setting(
        3600,
        "Ingress (ingress-nginx) and phase-6 sidecars: a WebSocket or SSE stream silent this long is closed",
        minimum=60,
        maximum=86_400,
    )
    rate_limit_per_second: int = setting(
        1000,
        "requests per second the edge lets through to the route, per Envoy replica; 0: off",
        minimum=0,
        maximum=1_000_000,
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.backend_timeout_seconds > self.request_timeout_seconds:
            yield (
                "backend_timeout_seconds",
                (
                    f"must be <= request_timeout_seconds ({self.request_timeout_seconds}), "
                    f"got {self.backend_timeout_seconds}"
                ),
            )


def hostname(meta: Meta, spec: RoutingSpec) -> str:
    return spec.hostname or f"{meta.instance}.localtest.me"


@dataclass(frozen=True)
class PathRoute:
    """Requests under `prefixes` go to `service:port`; with `reads_only`, only GET and HEAD do
    (a cache in front of the service: writes pass it by)."""

    service: str
    port: int
    prefixes: tuple[str, ...]
    reads_only: bool = False


def routing_objects(
    meta: Meta, spec: RoutingSpec, service: str, port: int, paths: tuple[PathRoute, ...] = ()
) -> list[dict[str, Any]]:
    """The route (and its traffic policy) or the Ingress that sends `hostname` to `service:port`,
    except what `paths` sends elsewhere. Read-only routes come first: the most specific match wins."""
    ordered = tuple(sorted(paths, key=lambda route: not route.reads_only))
    if spec.kind == "gateway":
        return [http_route(meta, spec, service, port, ordered), *traffic_policy(meta, spec, service)]
    if spec.kind == "ingress":
        return [ingress(meta, spec, service, port, ordered), streams_ingress(meta, spec, service, port, ordered)]
    return []


def stream_owners(service: str, port: int, paths: tuple[PathRoute, ...]) -> dict[str, tuple[str, int]]:
    """Each long-lived path and the Service that serves it: the route owning its prefix (never a
    read-only one: a cache holds no streams), else the default `service`."""
    owners = {}
    for stream in STREAM_PATHS:
        owner = [r for r in paths if not r.reads_only and any(_path(p) == stream for p in r.prefixes)]
        owners[stream] = (owner[0].service, owner[0].port) if owner else (service, port)
    return owners


def _path(prefix: str) -> str:
    """Gateway API and Ingress prefixes match whole segments: `/static/` is written `/static`."""
    return prefix.rstrip("/") or "/"


def _in_stream(prefix: str) -> bool:
    """The prefix is a stream path or lies under one: only the stream rule may route it (a read-only
    rule of the same prefix would win on its method match and send the stream to the cache)."""
    return any(_path(prefix) == stream or prefix.startswith(f"{stream}/") for stream in STREAM_PATHS)


def http_route(meta: Meta, spec: RoutingSpec, service: str, port: int, paths: tuple[PathRoute, ...]) -> dict[str, Any]:
    """The stream rules, one rule per routed prefix, then `/` to the service. Gateway API picks the
    longest matching prefix, and among equal prefixes the rule that also matches the method: reads of
    a cached prefix reach the cache, its writes the service behind it."""
    timeouts = {"request": f"{spec.request_timeout_seconds}s", "backendRequest": f"{spec.backend_timeout_seconds}s"}
    methods: tuple[str | None, ...]
    rules: list[dict[str, Any]] = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": stream}}],
            "backendRefs": [{"name": owner, "port": owner_port}],
            "timeouts": {"request": "0s"},
        }
        for stream, (owner, owner_port) in stream_owners(service, port, paths).items()
    ]
    for route in paths:
        methods = ("GET", "HEAD") if route.reads_only else (None,)
        rules += [
            {
                "matches": [
                    {"path": {"type": "PathPrefix", "value": _path(prefix)}, **({"method": m} if m else {})}
                    for m in methods
                ],
                "backendRefs": [{"name": route.service, "port": route.port}],
                "timeouts": timeouts,
            }
            for prefix in route.prefixes
            if not _in_stream(prefix)
        ]
    rules.append(
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": service, "port": port}],
            "timeouts": timeouts,
        }
    )
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": meta.metadata(service, "edge"),
        "spec": {
            "parentRefs": [{"name": spec.gateway_name, "namespace": spec.gateway_namespace}],
            "hostnames": [hostname(meta, spec)],
            "rules": rules,
        },
    }


def traffic_policy(meta: Meta, spec: RoutingSpec, service: str) -> list[dict[str, Any]]:
    """Envoy Gateway's BackendTrafficPolicy on the route: retries, and an overload guard.

    The edge limit is local (each Envoy replica counts for itself) and shared by all clients of
    the route: it protects the tier as a whole. Per-user and per-IP limits are the service's own,
    kept in Redis so that every replica agrees.
    """
    policy: dict[str, Any] = {
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": service}],
    }
    if spec.retries:
        policy["retry"] = {
            "numRetries": spec.retries,
            "retryOn": {
                "triggers": ["connect-failure", "reset", "retriable-status-codes"],
                "httpStatusCodes": [502, 503, 504],
            },
            "perRetry": {
                "timeout": f"{spec.backend_timeout_seconds}s",
                "backOff": {"baseInterval": "100ms", "maxInterval": "1s"},
            },
        }
    if spec.rate_limit_per_second:
        policy["rateLimit"] = {
            "type": "Local",
            "local": {"rules": [{"limit": {"requests": spec.rate_limit_per_second, "unit": "Second"}}]},
        }
    if len(policy) == 1:
        return []
    return [
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "BackendTrafficPolicy",
            "metadata": meta.metadata(service, "edge"),
            "spec": policy,
        }
    ]


def ingress(meta: Meta, spec: RoutingSpec, service: str, port: int, paths: tuple[PathRoute, ...]) -> dict[str, Any]:
    """An Ingress cannot match methods: a read-only route takes its prefixes whole (a cache passes
    writes on to its origin), and wins over a route of the same prefix. The stream paths are
    `streams_ingress`'s."""

    taken: dict[str, dict[str, Any]] = {}
    for route in paths:
        for prefix in route.prefixes:
            if not _in_stream(prefix):
                taken.setdefault(_path(prefix), ingress_path(prefix, route.service, route.port))
    return ingress_object(meta, spec, service, [*taken.values(), ingress_path("/", service, port)])


def streams_ingress(
    meta: Meta, spec: RoutingSpec, service: str, port: int, paths: tuple[PathRoute, ...]
) -> dict[str, Any]:
    """`<service>-streams`: the long-lived paths, with ingress-nginx's read and send timeouts (60 s by
    default, which would cut an idle stream) raised to `stream_idle_timeout_seconds`. ingress-nginx
    merges the Ingresses of one host; the longer prefix wins."""
    timeout = str(spec.stream_idle_timeout_seconds)
    annotations = {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": timeout,
        "nginx.ingress.kubernetes.io/proxy-send-timeout": timeout,
    }
    owners = stream_owners(service, port, paths)
    routes = [ingress_path(stream, owner, owner_port) for stream, (owner, owner_port) in owners.items()]
    return ingress_object(meta, spec, service, routes, name=f"{service}-streams", annotations=annotations)


def ingress_path(prefix: str, backend: str, backend_port: int) -> dict[str, Any]:
    return {
        "path": _path(prefix),
        "pathType": "Prefix",
        "backend": {"service": {"name": backend, "port": {"number": backend_port}}},
    }


def ingress_object(
    meta: Meta,
    spec: RoutingSpec,
    service: str,
    paths: list[dict[str, Any]],
    *,
    name: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata = meta.metadata(service, "edge", object_name=name)
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": {
            "ingressClassName": spec.ingress_class,
            "rules": [{"host": hostname(meta, spec), "http": {"paths": paths}}],
        },
    }
