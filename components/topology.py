"""Who talks to whom in a stack, read from its objects: the one source for diagrams and NetworkPolicies.

- a route (HTTPRoute, Ingress) sends traffic to the Services in its backends;
- a Service reaches the workloads whose pod labels its selector matches;
- a workload calls a Service when its containers name it as a host: `postgres-rw:5432` or
  `redis://:$(PASSWORD)@redis:6379` in env, args or command; an env var `*_HOST` whose value is the
  Service (`PRIMARY_HOST=postgres-rw`); `host=<service>` or `<service>:<port>` in a ConfigMap the pod
  mounts (PgBouncer's `[databases]`, a Varnish backend's `.host`, a members file); the Service's DNS
  name anywhere (`edge-cache-peers.<ns>.svc`); or a pod of a headless Service by its DNS name
  (`redis-shard-0-0.redis-nodes.<ns>.svc:6379`);
- KEDA's operator queries a Service that a ScaledObject's metrics-api trigger names in its URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

WORKLOADS = ("Deployment", "StatefulSet", "Job", "DaemonSet")
ROUTES = ("HTTPRoute", "Ingress")


def node_id(obj: dict[str, Any]) -> str:
    """`Deployment_web`: an object's identity in a stack (kind and name)."""
    return f"{obj['kind']}_{obj['metadata']['name']}".replace("-", "_")


_CONFIG_HOST = re.compile(r"(?<![\w-])host\s*=\s*\"?([\w][\w.-]*)")
"""`host=postgres-rw` (libpq, PgBouncer) and `.host = "web";` (a Varnish backend)."""
_HOST_PORT = re.compile(r"(?<![\w.$-])([A-Za-z0-9][\w-]*(?:\.[\w-]+)*):\d+")
_SERVICE_DNS = re.compile(r"(?<![\w.-])([A-Za-z0-9][\w-]*(?:\.[\w-]+)*\.svc)(?![\w-])")
"""A Service's DNS name, port or not: `edge-cache-peers.scaleladder-phase5.svc.cluster.local`."""


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def pod_selector(workload: dict[str, Any]) -> dict[str, str]:
    """The workload's selector narrowed by its pods' component, so that a Job sharing an app's name
    (`redis` and its bootstrap Job) is not taken for it; a Job's pods: their labels but the version."""
    labels = pod_labels(workload)
    selector: dict[str, str] = workload["spec"].get("selector", {}).get("matchLabels") or {
        k: v for k, v in labels.items() if k != "app.kubernetes.io/version"
    }
    component = "app.kubernetes.io/component"
    return {**selector, **({component: labels[component]} if component in labels else {})}


RUNTIME_LABELS = frozenset({"role"})
"""Labels a pod gets while it runs, not from its template: Patroni labels a group's members `role=primary`
or `role=replica`. A selector naming one matches the workloads its other labels match."""


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    static = {key: value for key, value in selector.items() if key not in RUNTIME_LABELS}
    return bool(static) and static.items() <= labels.items()


def _mounted_config_text(workload: dict[str, Any], objects: list[dict[str, Any]]) -> str:
    """The ConfigMap data the pods see: every key of a mounted ConfigMap, or only the `items` a volume
    projects (the edge cache's purge Job mounts its script, not the VCL that names the backends)."""
    pod = workload["spec"]["template"]["spec"]
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    texts = []
    for volume in pod.get("volumes", []):
        data = maps.get(volume.get("configMap", {}).get("name"), {})
        keys = (
            [item["key"] for item in volume["configMap"]["items"]] if "items" in volume.get("configMap", {}) else data
        )
        texts += [str(data[key]) for key in keys if key in data]
    return "\n".join(texts)


def _container_texts(workload: dict[str, Any]) -> list[str]:
    pod = workload["spec"]["template"]["spec"]
    texts = []
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        texts += [str(env["value"]) for env in container.get("env", []) if "value" in env]
        texts += [str(arg) for arg in container.get("args", []) + container.get("command", [])]
    return texts


def _host_env(workload: dict[str, Any]) -> list[str]:
    pod = workload["spec"]["template"]["spec"]
    return [
        str(env["value"])
        for container in [*pod.get("initContainers", []), *pod["containers"]]
        for env in container.get("env", [])
        if env["name"].endswith("_HOST") and "value" in env
    ]


def _hosts(workload: dict[str, Any], objects: list[dict[str, Any]]) -> list[str]:
    """Host names the workload's pods connect to, in any of the forms above."""
    config = _mounted_config_text(workload, objects)
    texts = "\n".join([*_container_texts(workload), config])
    found = [*_CONFIG_HOST.findall(config), *_HOST_PORT.findall(texts), *_SERVICE_DNS.findall(texts)]
    return [*_host_env(workload), *found]


def _names(host: str, service: dict[str, Any]) -> bool:
    """`host` is the Service (`redis`, `redis.<ns>`, `redis.<ns>.svc...`) or, for a headless one, one
    of its pods (`redis-shard-0-0.redis-nodes...`); a name in another namespace is not."""
    labels = host.split(".")
    if "svc" in labels[2:]:
        end = labels.index("svc", 2)
        if labels[end - 1] != service["metadata"].get("namespace", labels[end - 1]):
            return False
        labels = labels[: end - 1]
    name = service["metadata"]["name"]
    headless = service["spec"].get("clusterIP") == "None"
    return labels[0] == name or (headless and len(labels) > 1 and labels[1] == name)


def route_backends(route: dict[str, Any]) -> Iterator[str]:
    """Names of the Services a route sends traffic to."""
    for rule in route["spec"].get("rules", []):
        if route["kind"] == "HTTPRoute":
            yield from (ref["name"] for ref in rule.get("backendRefs", []))
        else:
            yield from (path["backend"]["service"]["name"] for path in rule.get("http", {}).get("paths", []))


def routes(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(route, Service) pairs: the route sends traffic to the Service."""
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    return [
        (route, services[name])
        for route in objects
        if route["kind"] in ROUTES
        for name in dict.fromkeys(route_backends(route))
        if name in services
    ]


def scaler_address(trigger: dict[str, Any]) -> tuple[str, int] | None:
    """Host and port KEDA's operator connects to for a trigger: a metrics-api URL, or a NATS
    monitoring endpoint (nats-jetstream); None for triggers that ask no Service (cpu)."""
    metadata = trigger.get("metadata", {})
    if trigger["type"] == "metrics-api":
        url = urlsplit(metadata["url"])
        return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    if trigger["type"] == "nats-jetstream":
        host, _, port = metadata["natsServerMonitoringEndpoint"].rpartition(":")
        return host, int(port)
    return None


def scaler_queries(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], int]]:
    """(ScaledObject, Service, port): KEDA's operator asks that port of the Service for a metric."""
    services = [o for o in objects if o["kind"] == "Service"]
    return [
        (scaler, service, address[1])
        for scaler in objects
        if scaler["kind"] == "ScaledObject"
        for trigger in scaler["spec"].get("triggers", [])
        if (address := scaler_address(trigger)) is not None
        for service in services
        if _names(address[0], service)
    ]


def selected(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(Service, workload) pairs: the Service's selector matches the workload's pods."""
    return [
        (service, workload)
        for service in objects
        if service["kind"] == "Service"
        for workload in workloads(objects)
        if selects(service["spec"].get("selector") or {}, pod_labels(workload))
    ]


def calls(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, Service) pairs: the workload connects to the Service (see the module docstring)."""
    services = [o for o in objects if o["kind"] == "Service"]
    hosts = [(workload, set(_hosts(workload, objects))) for workload in workloads(objects)]
    found = [
        (workload, service)
        for workload, names in hosts
        for service in services
        if any(_names(host, service) for host in names)
    ]
    return list({(node_id(w), node_id(s)): (w, s) for w, s in found}.values())
