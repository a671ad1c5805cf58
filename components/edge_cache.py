"""The edge cache of phase 5: Varnish in front of the web tier's static assets and cacheable reads.

`edge_cache_objects(meta, spec, revision=...)` returns the ConfigMap (the generated VCL and the
purge fan-out script), the Deployment, the Service the route sends cacheable paths to, the
headless Service that lists every replica for purge fan-out, a PodDisruptionBudget when more
than one replica runs, and a Job that bans what a new release invalidates. `cdn_document(spec)`
is the same policy in a vendor-neutral form a hosted CDN can be configured from.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.edge_cache_vcl import HEALTH_PATH, PREFIX, PURGE_SOCKET, CachePolicy, ordered_rules, render_vcl
from components.labels import Meta
from components.pods import Resources, config_map, container_security, http_probe, job, pod_security, spread
from components.realtime import STREAM_PATHS
from components.settings import setting

NAME = "edge-cache"
PEERS = "edge-cache-peers"
IMAGE = "varnish:7.1.2"
JOB_IMAGE = "python:3.11.14-slim-bookworm"
HTTP_PORT = 8080
PURGE_PORT = 8081
ADMIN_PORT = 6082
SERVICE_PORT = 80
RUN_AS = 10004  # any uid: varnishd (unprivileged, no jail) writes only to its emptyDir work dir and /tmp
JOB_RUN_AS = 10005  # the purge Job's Python needs no user entry either
CONFIG_DIR = "/etc/varnish"
VCL_FILE = "default.vcl"
WORK_DIR = "/var/lib/varnish"
SCRIPT_DIR = "/opt/edge"
SCRIPT_FILE = "purge_fanout.py"
SCRIPT = Path(__file__).parent / "scripts" / "edge" / SCRIPT_FILE
IMAGE_PATTERN = r"[a-z0-9./_-]+:[0-9][A-Za-z0-9._-]*"


@dataclass(frozen=True)
class DeployPurge:
    """The Job that runs the fan-out script once per release, banning what the release changes."""

    ban_prefixes: tuple[str, ...] = setting(
        ("/",), "path prefixes banned on every replica after a release; empty: no Job"
    )
    image: str = setting(JOB_IMAGE, "Python image the script runs in, pinned by tag", pattern=IMAGE_PATTERN)
    wait_seconds: int = setting(
        120, "how long the script waits for the peers' DNS name to list a replica", minimum=0, maximum=600
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        for index, prefix in enumerate(self.ban_prefixes):
            if not re.fullmatch(PREFIX, prefix):
                yield f"ban_prefixes[{index}]", f"must match {PREFIX}, got {prefix!r}"


@dataclass(frozen=True)
class EdgeCacheSpec:
    """Varnish pods, their cache size and the cache policy they run."""

    enabled: bool = setting(False, "deploy the edge cache and route cacheable paths through it (phase 5 on)")
    image: str = setting(
        IMAGE, "Varnish image, pinned to the 7.1 series the tests run (Debian's 7.1.1)", pattern=IMAGE_PATTERN
    )
    replicas: int = setting(2, "Varnish pods; each holds its own copy of the cache", minimum=1, maximum=20)
    storage_mib: int = setting(256, "cache size (malloc storage) per pod, MiB", minimum=16, maximum=65_536)
    resources: Resources = setting(
        Resources(cpu_request="100m", memory_request="384Mi", cpu_limit="1", memory_limit="512Mi"),
        "requests and limits of the Varnish container; memory must exceed storage_mib by 128Mi or more",
    )
    policy: CachePolicy = setting(CachePolicy, "what is cached, for how long, and who may invalidate it")
    deploy_purge: DeployPurge = setting(DeployPurge, "the release-time purge Job")

    def problems(self) -> Iterator[tuple[str, str]]:
        limit = mebibytes(self.resources.memory_limit)
        if limit is not None and limit < self.storage_mib + 128:
            yield (
                "resources.memory_limit",
                f"must be >= storage_mib + 128Mi ({self.storage_mib + 128}Mi), got {self.resources.memory_limit!r}",
            )


def mebibytes(quantity: str) -> int | None:
    """A memory quantity in MiB when it is given in Mi or Gi; None for other units."""
    if quantity.endswith("Gi"):
        return int(float(quantity[:-2]) * 1024)
    if quantity.endswith("Mi"):
        return int(float(quantity[:-2]))
    return None


def fanout_script() -> str:
    """components/scripts/edge/purge_fanout.py, the script the release Job runs."""
    return SCRIPT.read_text()


def varnishd_args(
    spec: EdgeCacheSpec,
    *,
    vcl: str = f"{CONFIG_DIR}/{VCL_FILE}",
    work_dir: str = f"{WORK_DIR}/edge",
    address: str = "",
    http_port: int = HTTP_PORT,
    purge_port: int = PURGE_PORT,
    admin_port: int = ADMIN_PORT,
) -> list[str]:
    """varnishd's arguments, in the pod and in the tests alike: foreground, two listeners, CLI on loopback."""
    return [
        "-F",
        "-f",
        vcl,
        "-n",
        work_dir,
        "-a",
        f"http={address}:{http_port},HTTP",
        "-a",
        f"{PURGE_SOCKET}={address}:{purge_port},HTTP",
        "-T",
        f"127.0.0.1:{admin_port}",
        "-s",
        f"malloc,{spec.storage_mib}m",
    ]


def edge_cache_objects(meta: Meta, spec: EdgeCacheSpec, *, revision: str) -> list[dict[str, Any]]:
    """Every object of the edge cache; `revision` (e.g. the web image) names the release's purge Job."""
    objects = [
        configuration(meta, spec),
        deployment(meta, spec),
        service(meta),
        peers_service(meta),
    ]
    if spec.replicas > 1:
        objects.append(disruption_budget(meta))
    if spec.deploy_purge.ban_prefixes:
        objects.append(purge_job(meta, spec, revision))
    return objects


def configuration(meta: Meta, spec: EdgeCacheSpec) -> dict[str, Any]:
    return config_map(
        meta.metadata(NAME, "edge-cache"),
        {VCL_FILE: render_vcl(spec.policy), SCRIPT_FILE: fanout_script()},
    )


def selector(meta: Meta) -> dict[str, str]:
    return {**meta.selector(NAME), "app.kubernetes.io/component": "edge-cache"}


def varnish_container(spec: EdgeCacheSpec) -> dict[str, Any]:
    return {
        "name": "varnish",
        "image": spec.image,
        "command": ["varnishd", *varnishd_args(spec)],
        "env": [{"name": "TMPDIR", "value": "/tmp"}],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "purge", "containerPort": PURGE_PORT},
        ],
        "resources": spec.resources.render(),
        # VCL compilation takes a few seconds on a busy node: allow 60 s before liveness counts
        "startupProbe": http_probe(HEALTH_PATH, "http", period=2, failure_threshold=30),
        # answered by Varnish itself: a sick origin does not take the cache out (it serves stale)
        "readinessProbe": http_probe(HEALTH_PATH, "http", period=5, failure_threshold=2),
        "livenessProbe": http_probe(HEALTH_PATH, "http", period=10, failure_threshold=3),
        # keep serving while endpoints and the gateway stop sending traffic here
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "securityContext": container_security(user=RUN_AS),
        "volumeMounts": [
            {"name": "vcl", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "work", "mountPath": WORK_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def deployment(meta: Meta, spec: EdgeCacheSpec) -> dict[str, Any]:
    vcl_digest = hashlib.sha256(render_vcl(spec.policy).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.metadata(NAME, "edge-cache"),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector(meta)},
            # a new pod is ready before an old one goes: cache capacity never drops in a rollout
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {
                    "labels": meta.labels(NAME, "edge-cache"),
                    # VCL is read at start: a policy change rolls the pods
                    "annotations": {"scaleladder.dev/vcl-sha256": vcl_digest},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": pod_security(RUN_AS),
                    "containers": [varnish_container(spec)],
                    "volumes": [
                        {"name": "vcl", "configMap": {"name": NAME, "items": [{"key": VCL_FILE, "path": VCL_FILE}]}},
                        # shared-memory log and counters (~100 MiB) and the compiled VCL
                        {"name": "work", "emptyDir": {"sizeLimit": "256Mi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                    "topologySpreadConstraints": spread(selector(meta)),
                },
            },
        },
    }


def service(meta: Meta) -> dict[str, Any]:
    """The route's backend for cacheable paths: port 80 to the `http` listener only."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(NAME, "edge-cache"),
        "spec": {
            "selector": selector(meta),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def peers_service(meta: Meta) -> dict[str, Any]:
    """Headless: its DNS name resolves to every ready replica, which the fan-out script PURGEs/BANs."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(NAME, "edge-cache", object_name=PEERS),
        "spec": {
            "clusterIP": "None",
            "selector": selector(meta),
            "ports": [{"name": "purge", "port": PURGE_PORT, "targetPort": "purge", "protocol": "TCP"}],
        },
    }


def disruption_budget(meta: Meta) -> dict[str, Any]:
    """One replica may be evicted at a time; the others keep serving (their caches are independent)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.metadata(NAME, "edge-cache"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(meta)}},
    }


def fanout_env(meta: Meta) -> list[dict[str, str]]:
    """Where the fan-out script finds the replicas: the headless Service's DNS name and purge port.

    The sample service needs the same two variables to purge on writes.
    """
    return [
        {"name": "EDGE_CACHE_PEERS", "value": f"{PEERS}.{meta.namespace}.svc.cluster.local"},
        {"name": "EDGE_CACHE_PURGE_PORT", "value": str(PURGE_PORT)},
    ]


def purge_job(meta: Meta, spec: EdgeCacheSpec, revision: str) -> dict[str, Any]:
    """A Job per release (`revision`): each release bans `deploy_purge.ban_prefixes` once, on every replica."""
    purge = spec.deploy_purge
    prefixes = [arg for prefix in purge.ban_prefixes for arg in ("--prefix", prefix)]
    container = {
        "name": "purge",
        "image": purge.image,
        "command": ["python", f"{SCRIPT_DIR}/{SCRIPT_FILE}", "ban", *prefixes],
        "env": [
            *fanout_env(meta),
            {"name": "EDGE_CACHE_WAIT_SECONDS", "value": str(purge.wait_seconds)},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": Resources(
            cpu_request="10m", memory_request="32Mi", cpu_limit="200m", memory_limit="64Mi"
        ).render(),
        "securityContext": container_security(user=JOB_RUN_AS),
        "volumeMounts": [{"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True}],
    }
    volume = {"name": "script", "configMap": {"name": NAME, "items": [{"key": SCRIPT_FILE, "path": SCRIPT_FILE}]}}
    return job(
        meta,
        NAME,
        "purge",
        ran_for=revision,
        component="cache-purge",
        user=JOB_RUN_AS,
        containers=[container],
        volumes=[volume],
        backoff_limit=4,
        deadline_seconds=purge.wait_seconds + 300,
    )


def cacheable_prefixes(spec: EdgeCacheSpec) -> list[str]:
    """Path prefixes the route should send (GET and HEAD) to the `edge-cache` Service, longest first."""
    return [rule.prefix for rule in ordered_rules(spec.policy) if rule.kind != "pass"]


def cdn_document(spec: EdgeCacheSpec) -> dict[str, Any]:
    """The cache policy as a vendor-neutral document a hosted CDN can be configured from."""
    policy = spec.policy
    return {
        "version": 1,
        "origin": {"host": policy.origin.host, "port": policy.origin.port, "health_path": policy.origin.health_path},
        "cache_key": {
            "host": "lowercased, port removed",
            "path": "as received, fragment removed",
            "query": {"sorted": True, "ignored_parameters": list(policy.ignored_query_params)},
        },
        "origin_directives": {
            "precedence": ["Surrogate-Control", "Cache-Control", "Expires", "rule default"],
            "honoured": ["max-age", "s-maxage", "no-store", "no-cache", "private", "stale-if-error"],
            "stripped_before_client": ["Surrogate-Control", "Surrogate-Key"],
        },
        "bypass": {
            "methods": "everything but GET and HEAD",
            "request_headers": ["Authorization"],
            "cookies": list(policy.session_cookies),
            "responses": ["Set-Cookie (except static rules, where it is removed)", "Vary: *"],
            "websocket_upgrades": "passed through to the origin (Upgrade: websocket), any path",
            "stream_paths": list(STREAM_PATHS),
        },
        "rules": [
            {
                "path_prefix": rule.prefix,
                "action": "bypass" if rule.kind == "pass" else "cache",
                "kind": rule.kind,
                "default_ttl_seconds": rule.ttl_seconds,
                "stale_while_revalidate_seconds": rule.grace_seconds,
                "stale_if_error_seconds": rule.stale_if_error_seconds,
                "strip_cookies": rule.kind == "static",
            }
            for rule in ordered_rules(policy)
        ],
        "unmatched_paths": "bypass",
        "invalidation": {
            "purge_url": "PURGE <path> (exact normalised URL)",
            "ban_surrogate_key": "BAN with X-Ban-Tag: <key>; objects tagged by the origin's Surrogate-Key header",
            "ban_prefix": "BAN with X-Ban-Prefix: <path prefix>",
            "on_release": list(spec.deploy_purge.ban_prefixes),
        },
        "debug_headers": ["X-Cache", "X-Cache-Hits", "Age"] if policy.debug_headers else ["Age"],
    }
