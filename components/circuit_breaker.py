"""Envoy circuit-breaker sidecar: a native sidecar (init container, `restartPolicy: Always`) plus its ConfigMap.

The application calls each upstream through a local listener (`127.0.0.1:<local_port>`), and
Envoy applies per-upstream circuit breakers, outlier ejection, timeouts and budgeted retries.
Traffic to the application enters through the inbound listener, which sheds load with a
connection limit and circuit breakers on the local application cluster. The admin interface
listens on 127.0.0.1 only; kubelet probes reach `/ready` through a health listener that routes
that one path to the admin interface and nothing else.

A pod that serves long-lived streams (`streams.prefixes`: WebSocket `/ws`, SSE `/events`) has
WebSocket upgrades enabled on its inbound listener, and those paths are routed with no route
timeout (`timeout: 0s`) and an idle timeout instead, to a cluster of their own whose breakers
leave room for the app's connection cap: an open stream holds an upstream request for its whole
life and must not eat the load-shedding budget of ordinary requests. The app itself refuses
streams beyond its cap (503), so Envoy's limits sit just above it.

`envoy_config(spec)` is the whole bootstrap as data; `render_config(spec)` is the YAML the pod
runs, and what the integration tests run against real upstreams on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from components.labels import Meta
from components.pods import Resources, config_map, container_security, http_probe
from components.settings import setting
from components.web import PORT as APP_PORT

IMAGE = "envoyproxy/envoy:v1.40.0"
RUN_AS = 10007  # any uid: Envoy only reads its config and listens on unprivileged ports
CONFIG_DIR = "/etc/envoy"
CONFIG_FILE = "envoy.yaml"
NAME = "circuit-breaker"
DNS_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
IPV4 = r"[0-9]{1,3}(\.[0-9]{1,3}){3}"
RETRY_ON = r"[a-z0-9-]+(,[a-z0-9-]+)*"


@dataclass(frozen=True)
class Thresholds:
    """Circuit breakers: when a limit is reached Envoy answers 503 at once instead of queueing."""

    max_connections: int = setting(
        64, "connections Envoy opens to the upstream's hosts at most", minimum=1, maximum=100_000
    )
    max_pending_requests: int = setting(
        32, "requests waiting for a connection; beyond this: 503", minimum=1, maximum=100_000
    )
    max_requests: int = setting(
        128, "requests in flight to the upstream at once; beyond this: 503", minimum=1, maximum=100_000
    )
    max_retries: int = setting(
        3, "retries in flight at once; only used when `retry.budget_percent` is 0", minimum=0, maximum=10_000
    )

    def render(self, retry: Retry | None = None) -> dict[str, Any]:
        threshold: dict[str, Any] = {
            "priority": "DEFAULT",
            "max_connections": self.max_connections,
            "max_pending_requests": self.max_pending_requests,
            "max_requests": self.max_requests,
        }
        if retry is not None and retry.budget_percent > 0:
            threshold["retry_budget"] = {
                "budget_percent": {"value": retry.budget_percent},
                "min_retry_concurrency": retry.min_retry_concurrency,
            }
        else:
            threshold["max_retries"] = self.max_retries
        return {"thresholds": [threshold]}


@dataclass(frozen=True)
class OutlierDetection:
    """Passive health checking: a host that keeps failing is ejected from load balancing for a while."""

    consecutive_5xx: int = setting(5, "5xx answers in a row (any cause) that eject a host", minimum=1, maximum=1000)
    consecutive_gateway_failure: int = setting(
        3, "502/503/504 or connect failures in a row that eject a host", minimum=1, maximum=1000
    )
    interval_ms: int = setting(
        1000,
        "how often ejections are reviewed: an ejected host returns at the first review after its time",
        minimum=10,
        maximum=600_000,
    )
    base_ejection_time_ms: int = setting(
        10000,
        "first ejection lasts this long; each further ejection of the same host multiplies it",
        minimum=10,
        maximum=3_600_000,
    )
    max_ejection_percent: int = setting(
        100, "share of hosts that may be ejected at once (100: a dead upstream fails fast)", minimum=0, maximum=100
    )

    def render(self) -> dict[str, Any]:
        return {
            "consecutive_5xx": self.consecutive_5xx,
            "consecutive_gateway_failure": self.consecutive_gateway_failure,
            "enforcing_consecutive_5xx": 100,
            "enforcing_consecutive_gateway_failure": 100,
            "interval": duration(self.interval_ms),
            "base_ejection_time": duration(self.base_ejection_time_ms),
            "max_ejection_percent": self.max_ejection_percent,
        }


@dataclass(frozen=True)
class Retry:
    """Route retries, capped by a budget so that retries cannot multiply an outage."""

    retry_on: str = setting(
        "connect-failure,refused-stream,reset,gateway-error",
        "Envoy retry conditions (x-envoy-retry-on values), comma-separated",
        pattern=RETRY_ON,
    )
    num_retries: int = setting(2, "retries per request after the first try", minimum=0, maximum=10)
    per_try_timeout_ms: int = setting(1000, "timeout of each try", minimum=1, maximum=300_000)
    budget_percent: float = setting(
        20.0,
        "retries in flight as a percent of requests in flight; 0: use `breaker.max_retries`",
        minimum=0,
        maximum=100,
    )
    min_retry_concurrency: int = setting(
        3, "retries always allowed in flight, whatever the budget", minimum=0, maximum=10_000
    )

    def render(self) -> dict[str, Any]:
        return {
            "retry_on": self.retry_on,
            "num_retries": self.num_retries,
            "per_try_timeout": duration(self.per_try_timeout_ms),
            # a retry goes to another host when there is one
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {
                        "@type": "type.googleapis.com/"
                        "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                    },
                }
            ],
            "host_selection_retry_max_attempts": 3,
        }


@dataclass(frozen=True)
class Upstream:
    """A service this pod calls; the application sends its requests to `127.0.0.1:<local_port>`."""

    name: str = setting("", "upstream name: the Envoy cluster and its stats prefix", pattern=r"[a-z][a-z0-9_-]{0,40}")
    host: str = setting(
        "",
        "DNS name or IPv4 address; a headless Service name lets Envoy eject single pods",
        pattern=f"{DNS_NAME}|{IPV4}",
    )
    port: int = setting(80, "the upstream's port", minimum=1, maximum=65535)
    local_port: int = setting(0, "loopback port the application calls for this upstream", minimum=1024, maximum=65535)
    connect_timeout_ms: int = setting(250, "TCP connect timeout to a host", minimum=1)
    request_timeout_ms: int = setting(3000, "whole-request timeout, retries included; then 504", minimum=1)
    breaker: Thresholds = setting(Thresholds, "circuit-breaker thresholds")
    outlier: OutlierDetection = setting(OutlierDetection, "outlier detection (ejection of failing hosts)")
    retry: Retry = setting(Retry, "retry policy and retry budget")

    def problems(self) -> Iterator[tuple[str, str]]:
        for key in ("name", "host"):
            if not getattr(self, key):
                yield key, "is required"
        if self.local_port == 0:
            yield "local_port", "is required"
        if self.retry.per_try_timeout_ms > self.request_timeout_ms:
            yield (
                "retry.per_try_timeout_ms",
                f"must be <= request_timeout_ms ({self.request_timeout_ms}), got {self.retry.per_try_timeout_ms}",
            )


@dataclass(frozen=True)
class Inbound:
    """The listener in front of the application container: sheds load before the app queues it."""

    port: int = setting(15006, "port the pod's Service targets; Envoy forwards to the app", minimum=1024, maximum=65535)
    app_port: int = setting(
        APP_PORT, "the application container's port (on the pod's loopback)", minimum=1, maximum=65535
    )
    max_connections: int = setting(
        1024, "downstream connections the listener keeps open; further ones are closed", minimum=1, maximum=100_000
    )
    max_pending_requests: int = setting(
        64, "requests waiting for a connection to the app; beyond: 503", minimum=1, maximum=100_000
    )
    max_requests: int = setting(256, "requests in flight to the app; beyond: 503", minimum=1, maximum=100_000)
    request_timeout_ms: int = setting(15000, "timeout of a request to the app; then 504", minimum=1, maximum=3_600_000)


@dataclass(frozen=True)
class Streams:
    """Long-lived requests through the inbound listener (WebSocket upgrades, server-sent events)."""

    prefixes: tuple[str, ...] = setting((), "path prefixes of long-lived streams; empty: no upgrades, no streams")
    max_connections: int = setting(
        1000, "streams the app holds at most (its own cap); Envoy leaves room for them", minimum=1, maximum=1_000_000
    )
    idle_timeout_seconds: int = setting(
        3600, "a stream with no bytes either way this long is closed (the app pings every 15 s)", minimum=1
    )


@dataclass(frozen=True)
class SidecarSpec:
    """The Envoy sidecar of one pod: its upstreams, its inbound side and its container."""

    image: str = setting(IMAGE, "Envoy image, pinned to the version the tests run", pattern=r"[a-z0-9./_-]+:v[0-9.]+")
    address: str = setting(
        "0.0.0.0", "address the inbound and health listeners bind (all interfaces in a pod)", pattern=IPV4
    )
    admin_port: int = setting(9901, "admin interface port, bound to 127.0.0.1 only", minimum=1024, maximum=65535)
    health_port: int = setting(
        15021, "port of the health listener that serves only /ready", minimum=1024, maximum=65535
    )
    upstreams: tuple[Upstream, ...] = setting((), "services this pod calls, one local listener each")
    inbound: Inbound = setting(Inbound, "inbound listener in front of the application")
    streams: Streams = setting(Streams, "long-lived streams the inbound listener carries")
    resources: Resources = setting(Resources, "requests and limits of the Envoy container")
    drain_seconds: int = setting(5, "time Envoy drains listeners on shutdown", minimum=0, maximum=60)
    concurrency: int = setting(
        2, "worker threads; Envoy would otherwise start one per node core, whatever the CPU limit", minimum=1
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        names: set[str] = set()
        ports: dict[int, str] = {}
        keys = [("admin_port", self.admin_port), ("health_port", self.health_port), ("inbound.port", self.inbound.port)]
        keys += [("inbound.app_port", self.inbound.app_port)]
        keys += [(f"upstreams[{i}].local_port", u.local_port) for i, u in enumerate(self.upstreams)]
        for key, port in keys:
            if port in ports:
                yield key, f"must be unique, got {port} (also {ports[port]})"
            ports.setdefault(port, key)
        for index, upstream in enumerate(self.upstreams):
            if upstream.name in names:
                yield f"upstreams[{index}].name", f"must be unique, got {upstream.name!r} twice"
            names.add(upstream.name)


def duration(milliseconds: int) -> str:
    """A protobuf Duration as Envoy's YAML takes it: 250 -> '0.25s', 3000 -> '3s'."""
    seconds, millis = divmod(milliseconds, 1000)
    return f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s"


def envoy_config(spec: SidecarSpec) -> dict[str, Any]:
    """The Envoy bootstrap: admin on loopback, health, inbound and one outbound listener per upstream."""
    clusters = [
        static_cluster("admin", "127.0.0.1", spec.admin_port),
        inbound_cluster(spec.inbound),
        *([streams_cluster(spec.inbound, spec.streams)] if spec.streams.prefixes else []),
        *(upstream_cluster(upstream) for upstream in spec.upstreams),
    ]
    listeners = [
        health_listener(spec),
        inbound_listener(spec),
        *(outbound_listener(upstream) for upstream in spec.upstreams),
    ]
    return {
        "admin": {"address": socket_address("127.0.0.1", spec.admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        # caps downstream connections across all listeners, a last line of defence
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/"
                        "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": total_connections(spec),
                    },
                }
            ]
        },
    }


def total_connections(spec: SidecarSpec) -> int:
    """Downstream connections Envoy accepts in all: the inbound limit, plus room for probes and the app."""
    return inbound_connections(spec) + 64 + sum(u.breaker.max_requests for u in spec.upstreams)


def inbound_connections(spec: SidecarSpec) -> int:
    """Connections the inbound listener keeps open: ordinary ones, plus the app's streams if it has any."""
    return spec.inbound.max_connections + (spec.streams.max_connections if spec.streams.prefixes else 0)


def render_config(spec: SidecarSpec) -> str:
    """The bootstrap as the YAML file the container reads."""
    return yaml.safe_dump(envoy_config(spec), sort_keys=False)


def socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def endpoints(name: str, host: str, port: int) -> dict[str, Any]:
    return {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}],
    }


def static_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "0.25s", "load_assignment": endpoints(name, host, port)}


def inbound_cluster(inbound: Inbound) -> dict[str, Any]:
    """The application on the pod's loopback, guarded by circuit breakers (load shedding)."""
    limits = Thresholds(
        max_connections=inbound.max_requests,
        max_pending_requests=inbound.max_pending_requests,
        max_requests=inbound.max_requests,
        max_retries=0,
    )
    return {
        **static_cluster("inbound_app", "127.0.0.1", inbound.app_port),
        "circuit_breakers": limits.render(),
    }


def streams_cluster(inbound: Inbound, streams: Streams) -> dict[str, Any]:
    """The application again, for long-lived streams: one HTTP/1.1 connection each, up to the app's cap."""
    limit = streams.max_connections
    limits = Thresholds(max_connections=limit, max_pending_requests=limit, max_requests=limit, max_retries=0)
    return {**static_cluster("inbound_streams", "127.0.0.1", inbound.app_port), "circuit_breakers": limits.render()}


def upstream_cluster(upstream: Upstream) -> dict[str, Any]:
    """One upstream: every address its DNS name resolves to is a host, ejected on its own."""
    return {
        "name": upstream.name,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_ONLY",
        "connect_timeout": duration(upstream.connect_timeout_ms),
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": endpoints(upstream.name, upstream.host, upstream.port),
        "circuit_breakers": upstream.breaker.render(upstream.retry),
        "outlier_detection": upstream.outlier.render(),
        # no panic routing: with every host ejected the breaker is open and calls fail at once
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
    }


def router() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }


def http_manager(stat_prefix: str, routes: list[dict[str, Any]], *, websocket: bool = False) -> dict[str, Any]:
    """An HTTP/1.1-or-2 connection manager routing by `routes`; its stats are under `stat_prefix`.
    With `websocket`, it carries WebSocket upgrades (Envoy refuses them otherwise)."""
    manager: dict[str, Any] = {
        "@type": "type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": {
            "name": stat_prefix,
            "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
        },
        "http_filters": [router()],
    }
    if websocket:
        manager["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}


def listener(name: str, address: str, port: int, filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "address": socket_address(address, port), "filter_chains": [{"filters": filters}]}


def health_listener(spec: SidecarSpec) -> dict[str, Any]:
    """Exactly `/ready` of the admin interface, for kubelet probes; every other path is a 404."""
    route = {"match": {"path": "/ready"}, "route": {"cluster": "admin", "timeout": "1s"}}
    return listener("health", spec.address, spec.health_port, [http_manager("health", [route])])


def inbound_listener(spec: SidecarSpec) -> dict[str, Any]:
    inbound = spec.inbound
    limit = {
        "name": "envoy.filters.network.connection_limit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
            "stat_prefix": "inbound",
            "max_connections": inbound_connections(spec),
        },
    }
    streams = [
        {
            "match": {"path_separated_prefix": prefix},
            "route": {
                "cluster": "inbound_streams",
                "timeout": "0s",
                "idle_timeout": f"{spec.streams.idle_timeout_seconds}s",
            },
        }
        for prefix in spec.streams.prefixes
    ]
    route = {
        "match": {"prefix": "/"},
        "route": {"cluster": "inbound_app", "timeout": duration(inbound.request_timeout_ms)},
    }
    manager = http_manager("inbound", [*streams, route], websocket=bool(streams))
    return listener("inbound", spec.address, inbound.port, [limit, manager])


def outbound_listener(upstream: Upstream) -> dict[str, Any]:
    route = {
        "match": {"prefix": "/"},
        "route": {
            "cluster": upstream.name,
            "timeout": duration(upstream.request_timeout_ms),
            "retry_policy": upstream.retry.render(),
        },
    }
    return listener(
        f"outbound_{upstream.name}", "127.0.0.1", upstream.local_port, [http_manager(upstream.name, [route])]
    )


def envoy_args(spec: SidecarSpec, config_dir: str = CONFIG_DIR) -> list[str]:
    """Envoy's command line, in the pod and in the tests alike."""
    return [
        "--config-path",
        f"{config_dir}/{CONFIG_FILE}",
        "--disable-hot-restart",
        "--drain-time-s",
        str(spec.drain_seconds),
        "--concurrency",
        str(spec.concurrency),
        "--log-level",
        "warn",
    ]


def circuit_breaker_sidecar(
    meta: Meta, spec: SidecarSpec, *, app: str, component: str = "server"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The native sidecar container for `app`'s pod, and the ConfigMap it reads its bootstrap from.

    Append the container to the pod's `initContainers` (it starts, and is ready, before the app),
    the returned volume `sidecar_volume(app)` to its volumes, and add the ConfigMap to the objects.
    """
    name = config_map_name(app)
    container = {
        "name": NAME,
        "image": spec.image,
        "restartPolicy": "Always",
        "args": envoy_args(spec),
        "ports": [
            {"name": "inbound", "containerPort": spec.inbound.port},
            {"name": "envoy-health", "containerPort": spec.health_port},
        ],
        "resources": spec.resources.render(),
        # Envoy starts in well under a second; give a slow node 30 s
        "startupProbe": http_probe("/ready", "envoy-health", period=1, failure_threshold=30, timeout=1),
        # out of the Service while Envoy initialises or drains
        "readinessProbe": http_probe("/ready", "envoy-health", period=5, failure_threshold=2, timeout=1),
        # restarted only when it stops accepting connections for 30 s
        "livenessProbe": {"tcpSocket": {"port": "envoy-health"}, "periodSeconds": 10, "failureThreshold": 3},
        "securityContext": {**container_security(), "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "runAsNonRoot": True},
        "volumeMounts": [{"name": name, "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    data = {CONFIG_FILE: render_config(spec)}
    return container, config_map(meta.metadata(app, component, object_name=name), data)


def upstream_env(spec: SidecarSpec) -> list[dict[str, str]]:
    """The application's environment: `<NAME>_URL` of each upstream, pointing at its local listener."""
    return [
        {"name": f"{u.name.upper().replace('-', '_')}_URL", "value": f"http://127.0.0.1:{u.local_port}"}
        for u in spec.upstreams
    ]


def config_map_name(app: str) -> str:
    return f"{app}-{NAME}"


def sidecar_volume(app: str) -> dict[str, Any]:
    """The pod volume holding the sidecar's bootstrap."""
    return {"name": config_map_name(app), "configMap": {"name": config_map_name(app)}}
