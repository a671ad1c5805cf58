"""How traffic reaches the web tier: a Gateway API HTTPRoute (default), or a plain Ingress.

The route attaches to the cluster layer's shared Gateway. Timeouts live on the route; retries and
rate limiting at the edge are Envoy Gateway's BackendTrafficPolicy, attached to the route. For
clusters that only run an Ingress controller, `routing.kind: ingress` renders a
`networking.k8s.io/v1` Ingress with a configurable class instead (no retries or rate limits:
those are controller-specific annotations, left to the operator).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from components.cluster_layer import GATEWAY_NAME, GATEWAY_NAMESPACE
from components.labels import Meta
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
        return [ingress(meta, spec, service, port, ordered)]
    return []


def _path(prefix: str) -> str:
    """Gateway API and Ingress prefixes match whole segments: `/static/` is written `/static`."""
    return prefix.rstrip("/") or "/"


def http_route(meta: Meta, spec: RoutingSpec, service: str, port: int, paths: tuple[PathRoute, ...]) -> dict[str, Any]:
    """One rule per routed prefix, then `/` to the service. Gateway API picks the longest matching
    prefix, and among equal prefixes the rule that also matches the method: reads of a cached prefix
    reach the cache, its writes the service behind it."""
    timeouts = {"request": f"{spec.request_timeout_seconds}s", "backendRequest": f"{spec.backend_timeout_seconds}s"}
    methods: tuple[str | None, ...]
    rules: list[dict[str, Any]] = []
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
    writes on to its origin), and wins over a route of the same prefix."""

    def path(prefix: str, backend: str, backend_port: int) -> dict[str, Any]:
        return {
            "path": _path(prefix),
            "pathType": "Prefix",
            "backend": {"service": {"name": backend, "port": {"number": backend_port}}},
        }

    taken: dict[str, dict[str, Any]] = {}
    for route in paths:
        for prefix in route.prefixes:
            taken.setdefault(_path(prefix), path(prefix, route.service, route.port))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta.metadata(service, "edge"),
        "spec": {
            "ingressClassName": spec.ingress_class,
            "rules": [
                {
                    "host": hostname(meta, spec),
                    "http": {"paths": [*taken.values(), path("/", service, port)]},
                }
            ],
        },
    }
