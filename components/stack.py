"""A whole stack as data: its namespace and its parts, each a list of plain Kubernetes objects.

`build` is where the phases come together: which parts a stack has follows from its config,
and the web tier's environment is wired from the other parts' endpoints. `render` writes the
result to files and `__main__` hands each part to Pulumi; both see exactly the same objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from components import (
    climb,
    cluster_layer,
    edge_cache,
    microservices,
    network_policy,
    postgres,
    queue,
    redis,
    redis_cluster,
    routing,
    shards,
    single_server,
    web,
)
from components.charts import HelmRelease
from components.config import StackConfig
from components.labels import Meta

VERSION = version("scaleladder")
DEVELOPMENT_VALUE = "dev-only-not-a-secret-{}"
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}


@dataclass(frozen=True)
class Part:
    """One deployable part: a Pulumi component of type `component`, created after `depends_on`."""

    name: str
    component: str
    objects: list[dict[str, Any]]
    depends_on: tuple[str, ...] = ()
    moved_from: tuple[tuple[str, str], ...] = ()
    """(component, name) of parts that held some of these objects on a lower rung: the engine keeps
    those objects (Pulumi aliases) instead of replacing them when a stack climbs."""


@dataclass(frozen=True)
class Secrets:
    """Values generated at deploy time, one per purpose (`postgres-app`, `redis`, ...).

    `password(purpose)` is a Pulumi output when deploying (one generated password per purpose) and
    a marked stand-in when rendering; it is asked only for what the stack has.
    """

    password: Callable[[str], Any]

    @classmethod
    def development(cls) -> Secrets:
        """Obvious placeholders, so a rendered manifest can never leak a real credential."""
        return cls(DEVELOPMENT_VALUE.format)

    def database(self, group: str = postgres.NAME) -> postgres.PostgresPasswords:
        """The app and replication passwords of one Postgres group (each group its own)."""
        return postgres.PostgresPasswords(
            app=self.password(f"{group}-app"), replication=self.password(f"{group}-replication")
        )

    @property
    def redis(self) -> Any:
        return self.password("redis")


@dataclass(frozen=True)
class Stack:
    name: str
    config: StackConfig
    meta: Meta
    namespace: dict[str, Any]
    parts: tuple[Part, ...]
    outputs: dict[str, Any] = field(default_factory=dict)
    releases: tuple[HelmRelease, ...] = ()

    def objects(self) -> list[dict[str, Any]]:
        """The namespace, then every part's objects in deployment order."""
        return [self.namespace, *(obj for part in self.parts for obj in part.objects)]


def namespace_object(meta: Meta) -> dict[str, Any]:
    """The stack's namespace; Pod Security admission enforces the `restricted` standard on every pod.

    Every pod of every phase meets it (the cluster tier deploys them all under it)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": meta.namespace,
            "labels": {
                **meta.labels("scaleladder", "namespace"),
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        },
    }


def build(name: str, config: StackConfig, secrets: Secrets) -> Stack:
    """Every object of stack `name`, grouped into parts in the order they must be created."""
    if config.layer == "cluster":
        return _cluster_layer(name, config)
    meta = Meta(namespace=config.namespace or f"scaleladder-{name}", instance=name, version=VERSION)
    if config.climb.transitional:
        parts, front, paths = _climbing(meta, config, secrets)
    else:
        parts, front, paths = _database_and_web(meta, config, secrets)
    route_after = [front, *(route.service for route in paths)]
    if config.edge_cache.enabled:
        # the VCL resolves its origin when Varnish starts: the tier behind it comes first
        cached = edge_cache.edge_cache_objects(meta, config.edge_cache, revision=config.web.image)
        parts.append(Part("edge-cache", "EdgeCache", cached, (front,)))
        route_after.append("edge-cache")
        prefixes = tuple(edge_cache.cacheable_prefixes(config.edge_cache))
        paths = (routing.PathRoute(edge_cache.NAME, edge_cache.SERVICE_PORT, prefixes, reads_only=True), *paths)
    edge = routing.routing_objects(meta, config.routing, front, web.SERVICE_PORT, paths)
    if edge:
        parts.append(Part("routing", "EdgeRoute", edge, tuple(dict.fromkeys(route_after))))
    # deny by default, then allow exactly the connections the objects above make
    objects = [obj for part in parts for obj in part.objects]
    parts.append(Part("network", "NetworkPolicies", network_policy.network_policies(meta, objects)))
    outputs: dict[str, Any] = {
        "namespace": meta.namespace,
        "phase": config.phase,
        "web_url": f"http://{front}.{meta.namespace}.svc.cluster.local:{web.SERVICE_PORT}",
    }
    if config.climb.transitional:
        outputs["climb"] = {"from_phase": config.climb.from_phase, "stage": config.climb.stage}
    if edge:
        outputs["public_host"] = routing.hostname(meta, config.routing)
    if config.edge_cache.enabled:
        outputs["cdn"] = edge_cache.cdn_document(config.edge_cache)
    return Stack(name, config, meta, namespace_object(meta), tuple(not_awaited(part) for part in parts), outputs)


def not_awaited(part: Part) -> Part:
    """The part with its Services marked `pulumi.com/skipAwait`.

    A part is done when its workloads are: Pulumi awaits every pod of them Ready, and every Service
    selects pods of its own part's workloads only (tests/unit/test_stack_parts.py). Awaiting the
    Service as well would add nothing but time: the Kubernetes provider waits 10 s more after every
    change to its Endpoints (pkg/await/service.go), and the parts run one after another."""
    return dataclasses.replace(
        part,
        objects=[
            {
                **obj,
                "metadata": {
                    **obj["metadata"],
                    "annotations": {**obj["metadata"].get("annotations", {}), **SKIP_AWAIT},
                },
            }
            if obj["kind"] == "Service"
            else obj
            for obj in part.objects
        ],
    )


def _database_and_web(
    meta: Meta, config: StackConfig, secrets: Secrets
) -> tuple[list[Part], str, tuple[routing.PathRoute, ...]]:
    """The data tier and the service; returns the parts, the Service `/` goes to, and the paths
    other Services own (phase 6's roles)."""
    if config.single_server:
        objects = single_server.objects(meta, config.web, config.postgres, secrets.database())
        return [Part("server", "SingleServer", objects)], web.NAME, ()
    endpoints = postgres.endpoints(meta, config.postgres)
    # migrations take session-level locks: they talk to the primary itself, never through the pooler
    primary = postgres.Address(postgres.RW_SERVICE, postgres.PORT, config.postgres.database)
    migration_env = postgres.database_env(dataclasses.replace(endpoints, primary=primary, replicas=()))
    parts = [
        Part(
            "postgres",
            "PostgresGroup",
            postgres.postgres_objects(meta, config.postgres, secrets.database()),
            moved_from=(SINGLE_SERVER,),
        )
    ]
    env = postgres.database_env(endpoints)
    if config.shards.enabled:
        groups = shards.group_objects(meta, config.shards, config.postgres, secrets.database)
        parts += [Part(name, "PostgresGroup", objects) for name, objects in groups]
        parts.append(Part("shard-map", "ShardMap", [shards.map_config_map(meta, config.shards)]))
        migration_env += shards.client_env(meta, config.shards, config.postgres, direct=True)
        env += shards.client_env(meta, config.shards, config.postgres)
    job = web.migrate_job(meta, config.web, migration_env)
    parts.append(Part("migrations", "SchemaMigration", [job], tuple(part.name for part in parts)))
    after = ["migrations"]
    if config.redis.enabled:
        parts.append(_redis_part(meta, config.redis, secrets.redis))
        after.append("redis")
        env += redis.client_env(config.redis)
    if config.queue.enabled:
        parts.append(Part("queue", "Queue", queue.queue_objects(meta, config.queue, provision_image=config.web.image)))
        after.append("queue")
        env += queue.job_env(meta, config.queue)
        workers = microservices.worker_objects(meta, config.web, config.queue, env)
        parts.append(Part(microservices.WORKER, "QueueWorkers", workers, tuple(after)))
    if not config.microservices.enabled:
        parts.append(
            Part("web", "AutoscaledService", web.web_objects(meta, config.web, env), tuple(after), (SINGLE_SERVER,))
        )
        return parts, web.NAME, ()
    for role in microservices.ROLES:
        objects = microservices.role_objects(
            meta,
            config.web,
            config.microservices,
            role,
            env,
            stream_idle_seconds=config.routing.stream_idle_timeout_seconds,
        )
        parts.append(Part(role.name, "AutoscaledService", objects, tuple(after)))
    paths = tuple(routing.PathRoute(role.name, web.SERVICE_PORT, role.paths) for role in microservices.ROLES)
    return parts, microservices.FRONT, paths


def _redis_part(meta: Meta, spec: redis.RedisSpec, password: Any) -> Part:
    if spec.mode == "cluster":
        return Part("redis", "RedisCluster", redis_cluster.cluster_objects(meta, spec, password), moved_from=(STORE,))
    return Part("redis", *STORE[:1], redis.standalone_objects(meta, spec, password))


SINGLE_SERVER = ("SingleServer", "server")
STORE = ("SessionStore", "redis")


def _climbing(
    meta: Meta, config: StackConfig, secrets: Secrets
) -> tuple[list[Part], str, tuple[routing.PathRoute, ...]]:
    """Both rungs during a climb (components/climb.py): the upper rung's parts; while expanding,
    the lower rung's serving tier in place of its own; the old data tier kept until the climb ends;
    the copy Job (expand) or the finishing Job (switch)."""
    assert config.below is not None
    rung = climb.RUNGS[config.climb.from_phase]
    expanding = config.climb.stage == "expand"
    upper, front, paths = _database_and_web(meta, config, secrets)
    lower, lower_front, _ = _database_and_web(meta, config.below, secrets)
    old = {part.name: part for part in lower}
    parts = list(upper)
    if rung.lower == 1:
        server = old["server"]
        if expanding:  # the one pod serves from its own volume while the Job copies
            parts = [part for part in parts if part.name != "web"]
            front = lower_front
        owned = {_key(obj) for part in parts for obj in part.objects}
        kept = [obj for obj in server.objects if _key(obj) not in owned]
        if expanding:
            parts.append(dataclasses.replace(server, objects=kept))
        else:  # the pod is gone; its volume is kept until the climb ends
            claim = [obj for obj in kept if obj["kind"] == "PersistentVolumeClaim"]
            parts.append(dataclasses.replace(server, objects=claim))
        source = postgres.database_env(single_server.service_endpoints(meta, config.below.postgres))
    else:
        if expanding:  # the lower rung's service, same as before, on the old tier
            parts = [old["web"] if part.name == "web" else part for part in parts]
        if rung.lower == 2:  # Patroni on postgres-0 alone: new members must find its group, not start one
            parts = [_one_member(part) if part.name == "postgres" else part for part in parts]
        if rung.lower == 3:
            store = old["redis"]
            owned = {_key(obj) for part in parts for obj in part.objects}
            kept = [obj for obj in store.objects if _key(obj) not in owned]
            at = [part.name for part in parts].index("redis") + 1
            parts.insert(at, Part("session-store", store.component, kept, moved_from=(STORE,)))
            source = redis.client_env(config.below.redis)
        else:
            source = []
    migration_env = _env(next(part for part in upper if part.name == "migrations").objects[0])
    env = [*migration_env, *climb.source_env(rung, source)] if source else migration_env
    if rung.lower == 3:
        env += redis.client_env(config.redis)
    if expanding and rung.action:
        data = tuple(part.name for part in parts if part.component in DATA_COMPONENTS)
        job = climb.job(meta, config.web, env, rung)
        parts.append(Part(climb.NAME, "ClimbCopy", [job], data))
    elif rung.finish:
        job = climb.job(meta, config.web, env, rung, finish=True)
        parts.append(Part(climb.NAME, "ClimbCopy", [job], (front,)))
    return parts, front, paths


DATA_COMPONENTS = frozenset({"PostgresGroup", "SchemaMigration", "SessionStore", "RedisCluster", "SingleServer"})


def _one_member(group: Part) -> Part:
    """The group's StatefulSet with one member: the StatefulSet controller would create the new
    members before it restarts postgres-0, and Patroni on an empty member with no group to join
    starts an empty one of its own."""
    objects = [
        {**obj, "spec": {**obj["spec"], "replicas": 1}} if obj["kind"] == "StatefulSet" else obj
        for obj in group.objects
    ]
    return dataclasses.replace(group, objects=objects)


def _key(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _env(job: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def _cluster_layer(name: str, config: StackConfig) -> Stack:
    """Helm releases (or only their CRDs) for the add-ons, then the shared Gateway that phase stacks attach to."""
    meta = Meta(namespace=config.namespace or cluster_layer.GATEWAY_NAMESPACE, instance=name, version=VERSION)
    crds = cluster_layer.crd_objects(config.cluster)
    parts = [Part("crds", "CustomResourceDefinitions", crds)] if crds else []
    gateway = cluster_layer.gateway_objects(meta, config.cluster)
    parts.append(Part("gateway", "SharedGateway", gateway, tuple(part.name for part in parts)))
    releases = tuple(cluster_layer.releases(config.cluster))
    outputs = {
        "gateway": f"{meta.namespace}/{cluster_layer.GATEWAY_NAME}",
        "gateway_node_port": config.cluster.node_port,
        "releases": {release.name: release.version for release in releases},
    }
    return Stack(name, config, meta, namespace_object(meta), tuple(parts), outputs, releases)
