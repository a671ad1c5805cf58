"""Phase 6: the sample service split by role, each role its own autoscaled tier behind an Envoy sidecar.

Every role runs the same image with `ROLE=<role>` and owns the URL prefixes in `ROLES` (the
gateway routes by them; the service answers 404 outside its own). Calls between roles leave the
caller through its sidecar's local listener (`CATALOG_URL=http://127.0.0.1:15001`), where circuit
breakers, outlier ejection, timeouts and budgeted retries apply, and reach the callee's pods through
their sidecar's inbound listener, which sheds load. Upstreams are addressed by a headless Service
(`<role>-pods`), so Envoy sees, and can eject, single pods. The worker role consumes the job
queue; it has no Service, and scales on CPU or, with KEDA, on the queue's lag. The role holding the
long-lived streams (the catalog: `/ws`, `/events`) scales, with `scale_on_connections`, on its open
connections as well as CPU, through a KEDA ScaledObject instead of an HPA.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from components import circuit_breaker, queue, web
from components.circuit_breaker import Inbound, OutlierDetection, Retry, SidecarSpec, Streams, Thresholds, Upstream
from components.labels import Meta
from components.pods import Resources
from components.realtime import STREAM_PATHS
from components.settings import setting

LOCAL_PORTS = 15001
"""The first loopback port of a caller's upstream listeners; one port per upstream after it."""


@dataclass(frozen=True)
class Role:
    """One role of the sample service: the URL prefixes it owns and the roles it calls."""

    name: str
    paths: tuple[str, ...]
    calls: tuple[str, ...] = ()


ROLES = (
    Role("auth", ("/users", "/sessions", "/me"), calls=("orders",)),
    Role("catalog", ("/products", "/static", "/events", "/ws", "/realtime")),
    Role("orders", ("/orders", "/jobs"), calls=("catalog",)),
)
"""The service's own table (sample.roles) as the gateway needs it; a test keeps the two equal."""

WORKER = "worker"
FRONT = "catalog"
"""The role `/` goes to (the catalog: the front page of a shop, its OpenAPI and static files)."""


@dataclass(frozen=True)
class CallPolicy:
    """How every role calls another: the thresholds of the caller's sidecar, per upstream."""

    connect_timeout_ms: int = setting(250, "TCP connect timeout to an upstream pod", minimum=1, maximum=60_000)
    request_timeout_ms: int = setting(
        3000, "whole call, retries included; then the caller gets 504", minimum=1, maximum=300_000
    )
    breaker: Thresholds = setting(Thresholds, "circuit breakers: beyond these limits Envoy answers 503 at once")
    outlier: OutlierDetection = setting(OutlierDetection, "ejection of upstream pods that keep failing")
    retry: Retry = setting(Retry, "retries of failed calls, within a retry budget")


@dataclass(frozen=True)
class MicroservicesSpec:
    """Phase 6's split of the web tier; each role reuses the `web` settings (image, HPA, resources)."""

    enabled: bool = setting(False, "run the service as one tier per role, with Envoy sidecars (phase 6 on)")
    calls: CallPolicy = setting(CallPolicy, "circuit breaking, ejection, timeouts and retries between roles")
    inbound: Inbound = setting(Inbound, "each pod's inbound listener: load shedding in front of the app")
    scale_on_connections: bool = setting(
        False,
        "KEDA scales the role holding /ws and /events on open connections (web.realtime.target_connections "
        "per pod) and CPU, instead of an HPA; needs KEDA in the cluster (cluster.keda). Phase 6 on",
    )
    sidecar_resources: Resources = setting(
        Resources(cpu_request="50m", memory_request="64Mi", cpu_limit="500m", memory_limit="128Mi"),
        "requests and limits of each Envoy sidecar",
    )


def headless_name(role: str) -> str:
    return f"{role}-pods"


def sidecar_spec(meta: Meta, spec: MicroservicesSpec, role: Role, streams: Streams) -> SidecarSpec:
    """The role's sidecar: one upstream per role it calls, on consecutive local ports; the long-lived
    paths of `streams` that the role owns carried as streams."""
    policy = spec.calls
    upstreams = tuple(
        Upstream(
            name=callee,
            host=f"{headless_name(callee)}.{meta.namespace}.svc.cluster.local",
            port=spec.inbound.port,
            local_port=LOCAL_PORTS + index,
            connect_timeout_ms=policy.connect_timeout_ms,
            request_timeout_ms=policy.request_timeout_ms,
            breaker=policy.breaker,
            outlier=policy.outlier,
            retry=policy.retry,
        )
        for index, callee in enumerate(role.calls)
    )
    owned = tuple(prefix for prefix in role.paths if prefix in streams.prefixes)
    return SidecarSpec(
        upstreams=upstreams,
        inbound=spec.inbound,
        streams=dataclasses.replace(streams, prefixes=owned),
        resources=spec.sidecar_resources,
    )


def headless_service(meta: Meta, role: str, port: int) -> dict[str, Any]:
    """`<role>-pods`: every ready pod's address, for the callers' Envoy to balance and eject."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(role, "server", object_name=headless_name(role)),
        "spec": {
            "clusterIP": "None",
            "selector": web.server_selector(meta, role),
            "ports": [{"name": "inbound", "port": port, "targetPort": "inbound", "protocol": "TCP"}],
        },
    }


def role_objects(
    meta: Meta,
    web_spec: web.WebSpec,
    spec: MicroservicesSpec,
    role: Role,
    env: list[dict[str, Any]],
    *,
    stream_idle_seconds: int,
) -> list[dict[str, Any]]:
    """The role's sidecar ConfigMap, Deployment, Services (ClusterIP and headless), PDB, and its HPA,
    or for the stream role with `scale_on_connections` its KEDA ScaledObject."""
    streams = Streams(STREAM_PATHS, web_spec.realtime.max_connections, stream_idle_seconds)
    sidecar = sidecar_spec(meta, spec, role, streams)
    container, config = circuit_breaker.circuit_breaker_sidecar(meta, sidecar, app=role.name)
    tier = web.Tier(
        name=role.name,
        sidecar=(container, circuit_breaker.sidecar_volume(role.name)),
        inbound_port="inbound",
    )
    role_env = [*env, {"name": "ROLE", "value": role.name}, *circuit_breaker.upstream_env(sidecar)]
    scaler = (
        connection_scaler(meta, web_spec, role.name) if spec.scale_on_connections and sidecar.streams.prefixes else None
    )
    return [
        config,
        *web.web_objects(meta, web_spec, role_env, tier, scaler=scaler),
        headless_service(meta, role.name, sidecar.inbound.port),
    ]


def connection_scaler(meta: Meta, web_spec: web.WebSpec, role: str) -> dict[str, Any]:
    """A KEDA ScaledObject for `role`: open connections per pod, and CPU; KEDA creates the HPA.

    The metrics-api trigger reads `total` of `/realtime/connections` (every process of the role,
    summed in Redis) through the role's Service; as an AverageValue it is divided by the replicas
    and held at `target_connections` per pod. The HPA's bounds and damping are `web.autoscaling`'s.
    While every pod is at its cap none is ready, the Service has no endpoint and the query fails:
    an HPA with a metric it cannot fetch skips scaling down and still scales up on the others (CPU).
    """
    scaling = web_spec.autoscaling
    url = f"http://{role}.{meta.namespace}.svc.cluster.local/realtime/connections"
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta.metadata(role, "server"),
        "spec": {
            "scaleTargetRef": {"name": role},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": 10,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": web.scaling_behavior(scaling)}},
            "triggers": [
                {
                    "type": "metrics-api",
                    "metricType": "AverageValue",
                    "metadata": {
                        "url": url,
                        "format": "json",
                        "valueLocation": "total",
                        "targetValue": str(web_spec.realtime.target_connections),
                    },
                },
                {"type": "cpu", "metricType": "Utilization", "metadata": {"value": str(scaling.cpu_utilization)}},
            ],
        },
    }


def worker_objects(
    meta: Meta, web_spec: web.WebSpec, queue_spec: queue.QueueSpec, env: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The job workers: `sample worker`, no Service, scaled by the queue's scaler, one eviction at a time."""
    tier = web.Tier(name=WORKER, command="worker", service=False)
    worker_env = [*env, {"name": "ROLE", "value": WORKER}]
    return [
        web.deployment(meta, web_spec, worker_env, tier, autoscaled=True),
        queue.worker_scaler(meta, queue_spec, deployment=WORKER),
        web.disruption_budget(meta, WORKER),
    ]
