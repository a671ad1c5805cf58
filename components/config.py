"""A stack's configuration: one frozen `StackConfig`, read once, from Pulumi or a stack file.

Phases are cumulative: phase N's defaults switch on the parts of phases 1..N (`PHASE_DEFAULTS`),
and anything set in the stack's config overrides them. Components never read config; they
receive the spec they need from here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from components import climb
from components.climb import ClimbSpec
from components.cluster_layer import ClusterSpec
from components.edge_cache import EdgeCacheSpec
from components.microservices import FRONT, MicroservicesSpec
from components.postgres import PostgresSpec
from components.queue import QueueSpec
from components.redis import RedisSpec
from components.routing import RoutingSpec
from components.settings import NAMESPACE, ConfigError, Problem, describe, load, merge, setting
from components.shards import ShardsSpec
from components.web import WebSpec

DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
LAST_PHASE = 6


@dataclass(frozen=True)
class StackConfig:
    """Everything one stack deploys. Keys are `scaleladder:<field>` in the stack's config."""

    layer: Literal["phase", "cluster"] = setting(
        "phase", "phase: a rung of the ladder in its own namespace; cluster: the add-ons every phase shares"
    )
    phase: int = setting(
        1, "rung of the ladder; its defaults switch on the parts of every rung up to it", minimum=1, maximum=LAST_PHASE
    )
    namespace: str = setting(
        "", "namespace the stack deploys into; empty: scaleladder-<stack>", pattern=f"({DNS_LABEL})?"
    )
    single_server: bool = setting(False, "phase 1: web and Postgres as two containers of one pod, one volume")
    web: WebSpec = setting(WebSpec, "the sample service's pods")
    postgres: PostgresSpec = setting(PostgresSpec, "the database")
    redis: RedisSpec = setting(RedisSpec, "sessions and rate limits (phase 3), the cache (phase 4: a Redis Cluster)")
    shards: ShardsSpec = setting(ShardsSpec, "Postgres shard groups for user-scoped rows, routed by user id (phase 5)")
    edge_cache: EdgeCacheSpec = setting(EdgeCacheSpec, "Varnish in front of static and cacheable reads (phase 5)")
    queue: QueueSpec = setting(QueueSpec, "NATS JetStream job queue and its workers (phase 6)")
    microservices: MicroservicesSpec = setting(
        MicroservicesSpec, "the service split by role, Envoy circuit breakers between roles (phase 6)"
    )
    routing: RoutingSpec = setting(RoutingSpec, "how traffic reaches the web tier (Gateway API route or Ingress)")
    cluster: ClusterSpec = setting(ClusterSpec, "the cluster layer's add-ons (layer: cluster only)")
    climb: ClimbSpec = setting(ClimbSpec, "a climb in progress from the rung below (set by `scaleladder-local climb`)")
    below: StackConfig | None = field(default=None, init=False, repr=False, compare=False)
    """While climbing: the same settings on rung `climb.from_phase`, whose old tier is kept (not a key)."""

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from climb.problems(self.climb, self.phase)
        if self.climb.from_phase and self.layer == "cluster":
            yield "climb.from_phase", "must be 0 for the cluster layer (only phase stacks climb)"
        for switch in REDIS_SWITCHES:
            if self.web.env.get(switch) == "true" and not self.redis.enabled:
                yield f"web.env.{switch}", "needs redis.enabled: true (the service keeps that state in Redis)"
        if self.edge_cache.enabled and self.routing.kind == "none":
            yield "edge_cache.enabled", "needs a front door (routing.kind gateway or ingress) to send reads through it"
        if self.microservices.enabled and not self.queue.enabled:
            yield "microservices.enabled", "needs queue.enabled: true (the orders role serves /jobs)"
        if self.microservices.enabled and self.routing.kind == "none":
            yield "microservices.enabled", "needs a front door (routing.kind gateway or ingress) to route by role"
        if self.microservices.enabled and self.microservices.scale_on_connections and not self.web.autoscaling.enabled:
            yield (
                "microservices.scale_on_connections",
                "needs web.autoscaling.enabled: true (KEDA scales between its min_replicas and max_replicas)",
            )
        if self.single_server and (self.queue.enabled or self.microservices.enabled):
            yield "single_server", "must be false with queue or microservices (one pod is one process)"
        if self.single_server and self.web.autoscaling.enabled:
            yield "web.autoscaling.enabled", "must be false when single_server is true (one pod cannot autoscale)"
        if self.single_server and self.shards.enabled:
            yield "shards.enabled", "must be false when single_server is true (one pod runs one database)"
        if self.single_server and self.postgres.replicas:
            yield "postgres.replicas", f"must be 0 when single_server is true, got {self.postgres.replicas}"


REDIS_SWITCHES = ("SESSIONS_ENABLED", "RATE_LIMIT_ENABLED", "EVENTS_ENABLED", "CACHE_ENABLED")
"""The sample service's switches for patterns whose state lives in Redis."""

ON = "true"

PHASE_DEFAULTS: dict[int, dict[str, Any]] = {
    1: {"single_server": True},
    2: {"single_server": False},
    3: {
        # stateless web pods: sessions, rate-limit counters and event fan-out move to Redis
        "web": {
            "autoscaling": {"enabled": True},
            "env": {"SESSIONS_ENABLED": ON, "RATE_LIMIT_ENABLED": ON, "EVENTS_ENABLED": ON},
        },
        "postgres": {"replicas": 2, "pooler": {"enabled": True}},
        "redis": {"enabled": True, "mode": "standalone"},
        "routing": {"kind": "gateway"},
    },
    4: {
        # a caching layer: cache-aside reads, on a Redis Cluster that also holds the sessions
        "web": {"env": {"CACHE_ENABLED": ON}},
        "redis": {"mode": "cluster"},
    },
    5: {
        # the CDN layer: cacheable reads are served at the edge, before they reach a Python process
        "edge_cache": {"enabled": True},
        # and sharding: users and their orders spread over shard groups by user id
        "shards": {"enabled": True},
        # at this size a failover must lose no acknowledged order: commits wait for one replica
        "postgres": {"ha": {"synchronous_mode": True}},
    },
    6: {
        # microservices: one tier per role behind Envoy sidecars, async jobs on a queue with workers
        # the catalog holds the WebSocket and SSE clients: it scales on their number as well as on CPU
        "microservices": {"enabled": True, "scale_on_connections": True},
        "queue": {"enabled": True},
        "edge_cache": {"policy": {"origin": {"host": FRONT}}},
    },
}


def defaults_for(phase: int) -> dict[str, Any]:
    """The defaults of phases 1..`phase`, later phases winning."""
    merged: dict[str, Any] = {}
    for rung in range(1, phase + 1):
        merged = merge(merged, PHASE_DEFAULTS[rung])
    return merged


def from_values(values: Mapping[str, Any]) -> StackConfig:
    """A StackConfig from `scaleladder:` values (namespace prefix removed); ConfigError lists every problem."""
    phase = values.get("phase", 1)
    base = defaults_for(phase) if isinstance(phase, int) and 1 <= phase <= LAST_PHASE else {}
    config, problems = load(StackConfig, merge(base, values))
    if problems:
        raise ConfigError(problems)
    assert config is not None
    if config.climb.transitional:
        below = from_values({**values, "phase": config.climb.from_phase, "climb": {}})
        object.__setattr__(config, "below", below)
    return config


def from_stack_file(path: Path) -> StackConfig:
    """Read `stacks/Pulumi.<stack>.yaml` as Pulumi would, for rendering without the Pulumi CLI."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError([Problem("", f"{path} is not valid YAML: {error}")]) from None
    entries = document.get("config") if isinstance(document, Mapping) else document
    if not isinstance(entries, Mapping):
        raise ConfigError([Problem("", f"{path}: `config` must be a mapping, got {describe(entries)}")])
    values: dict[str, Any] = {}
    problems = []
    for key, value in entries.items():
        owner, _, name = str(key).partition(":")
        if owner != NAMESPACE:
            continue  # other providers' settings (kubernetes:context, ...) are theirs to check
        if isinstance(value, Mapping) and set(value) == {"secure"}:
            problems.append(Problem(name, "is encrypted; no scaleladder setting is a secret, set it in plain text"))
            continue
        # Pulumi writes plain values back as strings (`scaleladder:phase: "3"`) and hands them to the
        # program as strings: decode them as from_pulumi_config does
        values[name] = decoded(value) if isinstance(value, str) else value
    if problems:
        raise ConfigError(problems)
    return from_values(values)


def decoded(raw: str) -> Any:
    """A config string as the program reads it: JSON if it parses (`3`, `true`, objects), else the text."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def from_pulumi_config(config: Mapping[str, str]) -> StackConfig:
    """From the engine's config map (`pulumi.runtime.config`): objects arrive as JSON strings."""
    values: dict[str, Any] = {}
    for key, raw in config.items():
        owner, _, name = key.partition(":")
        if owner != NAMESPACE:
            continue
        values[name] = decoded(raw)
    return from_values(values)
