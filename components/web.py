"""The web tier: the sample service as a Deployment behind a Service, optionally autoscaled.

Phase 2 runs a fixed number of replicas; from phase 3 an HPA owns the replica count (the
Deployment then leaves `spec.replicas` unset so the two never fight), with a PodDisruptionBudget
and topology spread. Migrations run in a Job named after the image, so each new version migrates
once before it serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from components.labels import Meta
from components.pods import Resources, container_security, http_probe, job, mount_secret_files, pod_security, spread
from components.realtime import APP_SHUTDOWN_SECONDS, PRE_STOP_SECONDS, Realtime, stopping_seconds
from components.settings import setting

NAME = "web"
PORT = 8080
SERVICE_PORT = 80
RUN_AS = 10001  # the sample image's user; each part of the stack has its own uid of 10000 or more
IMAGE_PATTERN = r"[a-z0-9./_-]+(:[0-9]+)?[a-z0-9./_-]*:[A-Za-z0-9_][A-Za-z0-9._-]*(@sha256:[a-f0-9]{64})?"
APP_INTEGERS = {"WEB_CONCURRENCY": (1, 1, 64), "SHUTDOWN_TIMEOUT_SECONDS": (APP_SHUTDOWN_SECONDS, 1, 3600)}
"""`web.env` keys the kit reads too: the app's default and range (services/sample/src/sample/config.py)."""


@dataclass(frozen=True)
class Autoscaling:
    """HorizontalPodAutoscaler (autoscaling/v2) on CPU, with damped scale-down."""

    enabled: bool = setting(False, "an HPA owns the replica count (phase 3 on); off: `web.replicas` fixed pods")
    min_replicas: int = setting(2, "replicas the HPA never goes under; also sets the PDB", minimum=1, maximum=100)
    max_replicas: int = setting(10, "replicas the HPA never goes over", minimum=1, maximum=100)
    cpu_utilization: int = setting(70, "target average CPU, percent of the CPU request", minimum=10, maximum=100)
    scale_down_window_seconds: int = setting(
        120, "scale down only to the highest recommendation of this window (stops flapping)", minimum=0, maximum=3600
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.max_replicas < self.min_replicas:
            yield "max_replicas", f"must be >= min_replicas ({self.min_replicas}), got {self.max_replicas}"


@dataclass(frozen=True)
class WebSpec:
    """The sample service's pods and how many of them run."""

    image: str = setting(
        "scaleladder/sample:0.1.0", "sample-service image, pinned by tag (never latest)", pattern=IMAGE_PATTERN
    )
    replicas: int = setting(1, "pods when autoscaling is off", minimum=1, maximum=50)
    resources: Resources = setting(Resources, "requests and limits of the web container")
    autoscaling: Autoscaling = setting(Autoscaling, "HPA settings (phase 3 and up)")
    env: dict[str, str] = setting(dict, "extra environment for the service (feature switches)")
    realtime: Realtime = setting(Realtime, "long-lived connections (WebSocket, SSE): per-pod cap and drain batches")
    termination_grace_seconds: int = setting(
        45,
        "time a pod has from preStop to SIGKILL: the preStop sleep, the drain batches, then the app's shutdown",
        minimum=5,
        maximum=3600,
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.image.endswith(":latest"):
            yield "image", f"must be pinned to an explicit tag, got {self.image!r}"
        for key, (_, low, high) in APP_INTEGERS.items():
            if self.env_int(key) is None:
                yield f"env.{key}", f"must be an integer from {low} to {high}, got {self.env[key]!r}"
        shutdown = self.env_int("SHUTDOWN_TIMEOUT_SECONDS")
        needed = stopping_seconds(self.realtime, shutdown or APP_SHUTDOWN_SECONDS)
        if shutdown is not None and self.termination_grace_seconds < needed:
            yield (
                "termination_grace_seconds",
                f"must cover the preStop sleep ({PRE_STOP_SECONDS} s) + the drain batches "
                f"({self.realtime.drain_seconds():g} s) + the app's shutdown timeout ({shutdown} s) = {needed:g} s, "
                f"got {self.termination_grace_seconds}",
            )

    def env_int(self, key: str) -> int | None:
        """`env[key]` as the app reads it (its default when unset); None when the app would refuse it."""
        default, low, high = APP_INTEGERS[key]
        raw = self.env.get(key, str(default))
        return int(raw) if raw.isdigit() and low <= int(raw) <= high else None

    def realtime_env(self) -> list[dict[str, Any]]:
        """The app's connection cap (split over its processes) and drain batches."""
        return self.realtime.env(self.env_int("WEB_CONCURRENCY") or 1)


@dataclass(frozen=True)
class Tier:
    """One Deployment of the sample image: the whole service (`web`), or one role of it (phase 6).

    `command` is the `sample` subcommand it runs; `sidecar` a native sidecar container and its
    volume; with `inbound_port` set, the Service sends traffic to that port (the sidecar's inbound
    listener) instead of the app's; `service` False: no Service (a worker has no callers).
    """

    name: str = NAME
    command: str = "serve"
    sidecar: tuple[dict[str, Any], dict[str, Any]] | None = None
    inbound_port: str | None = None
    service: bool = True


def web_container(spec: WebSpec, env: list[dict[str, Any]], tier: Tier = Tier()) -> dict[str, Any]:
    """The service container: distinct startup, readiness and liveness probes, drained in three steps.

    A stopping pod first leaves the Service's endpoints while it still serves (preStop sleep), then
    on SIGTERM closes its long-lived connections in batches (`web.realtime`: close 1012, clients
    reconnect to other pods), then lets in-flight requests finish (SHUTDOWN_TIMEOUT_SECONDS);
    `termination_grace_seconds` is validated to cover all three. A tier that serves traffic gets
    the connection cap; readiness fails at the cap, so a full pod takes no new connections.
    """
    realtime = spec.realtime_env() if tier.service else []
    return {
        "name": tier.name,
        "image": spec.image,
        "args": [tier.command],
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": [*env, *realtime, *({"name": key, "value": value} for key, value in sorted(spec.env.items()))],
        "resources": spec.resources.render(),
        # start-up may wait for migrations and pools: up to 60 s before liveness counts
        "startupProbe": http_probe("/healthz", "http", period=2, failure_threshold=30),
        # out of the Service as soon as a dependency is unreachable for 10 s, or the pod is at its connection cap
        "readinessProbe": http_probe("/readyz", "http", period=5, failure_threshold=2),
        # restarted only when the process itself is stuck for 30 s
        "livenessProbe": http_probe("/healthz", "http", period=10, failure_threshold=3),
        # keep serving while endpoints and load balancers stop sending traffic here; SIGTERM comes after
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "securityContext": container_security(user=RUN_AS),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def migrate_container(spec: WebSpec, env: list[dict[str, Any]]) -> dict[str, Any]:
    """`sample migrate`: idempotent schema migrations, run to completion before the service starts."""
    return {
        "name": "migrate",
        "image": spec.image,
        "args": ["migrate"],
        "env": env,
        "resources": spec.resources.render(),
        "securityContext": container_security(user=RUN_AS),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


TMP_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}


def web_objects(
    meta: Meta, spec: WebSpec, env: list[dict[str, Any]], tier: Tier = Tier(), *, scaler: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Deployment and Service; with autoscaling, also the HPA (or `scaler`, an object that owns the
    replica count in its place, such as a KEDA ScaledObject) and the PDB."""
    autoscaled = spec.autoscaling.enabled or scaler is not None
    objects = [deployment(meta, spec, env, tier, autoscaled=autoscaled)]
    if tier.service:
        objects.append(service(meta, tier.name, tier.inbound_port or "http"))
    if autoscaled:
        objects += [scaler or autoscaler(meta, spec.autoscaling, tier.name), disruption_budget(meta, tier.name)]
    return objects


def migrate_job(meta: Meta, spec: WebSpec, env: list[dict[str, Any]]) -> dict[str, Any]:
    """The migrations of this image and its settings; a new image runs them anew (reruns are harmless)."""
    return job(
        meta,
        NAME,
        "migrate",
        component="migrations",
        user=RUN_AS,
        containers=[migrate_container(spec, env)],
        volumes=[TMP_VOLUME],
        backoff_limit=6,
        deadline_seconds=600,
    )


def server_selector(meta: Meta, name: str = NAME) -> dict[str, str]:
    return {**meta.selector(name), "app.kubernetes.io/component": "server"}


def deployment(
    meta: Meta, spec: WebSpec, env: list[dict[str, Any]], tier: Tier = Tier(), *, autoscaled: bool | None = None
) -> dict[str, Any]:
    """`autoscaled` (default: the spec's HPA switch) leaves `spec.replicas` to an autoscaler."""
    selector = server_selector(meta, tier.name)
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": spec.termination_grace_seconds,
        "securityContext": pod_security(RUN_AS),
        "containers": [web_container(spec, env, tier)],
        "volumes": [TMP_VOLUME],
        "topologySpreadConstraints": spread(selector),
    }
    if tier.sidecar is not None:
        container, volume = tier.sidecar
        pod["initContainers"] = [container]
        pod["volumes"] = [TMP_VOLUME, volume]
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        # a new pod must be ready before an old one goes: capacity never drops during a rollout
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        "revisionHistoryLimit": 5,
        "template": {"metadata": {"labels": meta.labels(tier.name, "server")}, "spec": mount_secret_files(pod)},
    }
    if not (spec.autoscaling.enabled if autoscaled is None else autoscaled):
        deployment_spec["replicas"] = spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.metadata(tier.name, "server"),
        "spec": deployment_spec,
    }


def service(meta: Meta, name: str = NAME, target: str = "http") -> dict[str, Any]:
    """Port 80 to the pods' `target` port (the app's, or a sidecar's inbound listener)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(name, "server"),
        "spec": {
            "selector": server_selector(meta, name),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": target, "protocol": "TCP"}],
        },
    }


def autoscaler(meta: Meta, scaling: Autoscaling, name: str = NAME) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta.metadata(name, "server"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": scaling.cpu_utilization},
                    },
                }
            ],
            "behavior": scaling_behavior(scaling),
        },
    }


def scaling_behavior(scaling: Autoscaling) -> dict[str, Any]:
    """How fast the replica count moves, for an HPA or the one KEDA creates."""
    return {
        # react fast to load: double, or add 4 pods, every 15 s, whichever is more
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15},
                {"type": "Pods", "value": 4, "periodSeconds": 15},
            ],
        },
        # shed slowly: at most a quarter of the pods a minute, after the window
        "scaleDown": {
            "stabilizationWindowSeconds": scaling.scale_down_window_seconds,
            "selectPolicy": "Min",
            "policies": [{"type": "Percent", "value": 25, "periodSeconds": 60}],
        },
    }


def disruption_budget(meta: Meta, name: str = NAME) -> dict[str, Any]:
    """One pod may be evicted at a time: drains proceed, and minReplicas >= 2 keeps one serving."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.metadata(name, "server"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": server_selector(meta, name)}},
    }
