"""Minimal valid objects the rule tests break one field at a time."""

from __future__ import annotations

import copy
from typing import Any

from components.labels import Meta
from components.network_policy import network_policies
from components.pods import Resources, container_security, http_probe, pod_security, spread

META = Meta(namespace="scaleladder-test", instance="test", version="0.1.0")


def container(name: str = "app") -> dict[str, Any]:
    return {
        "name": name,
        "image": "example/app:1.2.3",
        "ports": [{"name": "http", "containerPort": 8080}],
        "resources": Resources().render(),
        "startupProbe": http_probe("/healthz", "http", period=2, failure_threshold=30),
        "readinessProbe": http_probe("/readyz", "http", period=5, failure_threshold=2),
        "livenessProbe": http_probe("/healthz", "http", period=10, failure_threshold=3),
        "securityContext": container_security(user=10001),
    }


def deployment(name: str = "app", *, replicas: int | None = 1, component: str = "server") -> dict[str, Any]:
    selector = {**META.selector(name), "app.kubernetes.io/component": component}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {"labels": META.labels(name, component)},
            "spec": {
                "securityContext": pod_security(10001),
                "containers": [container(name)],
                "topologySpreadConstraints": spread(selector),
            },
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": META.metadata(name, component), "spec": spec}


def service(name: str = "app", *, selector_of: str = "app", component: str = "server") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": META.metadata(name, component),
        "spec": {
            "selector": {**META.selector(selector_of), "app.kubernetes.io/component": component},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def budget(name: str = "app", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": META.metadata(name, "server"),
        "spec": {
            **(spec or {"maxUnavailable": 1}),
            "selector": {"matchLabels": {**META.selector(name), "app.kubernetes.io/component": "server"}},
        },
    }


def autoscaler(name: str = "app", *, minimum: int = 2, maximum: int = 5) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": META.metadata(name, "server"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": minimum,
            "maxReplicas": maximum,
        },
    }


def scaled_object(name: str = "app", *, minimum: int = 2, maximum: int = 5) -> dict[str, Any]:
    """A KEDA ScaledObject on the Deployment `name` (KEDA's scaleTargetRef kind defaults to Deployment)."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": META.metadata(name, "server"),
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": minimum,
            "maxReplicaCount": maximum,
            "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}],
        },
    }


def route(backend: str = "app", port: int = 80) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": META.metadata(backend, "edge"),
        "spec": {
            "parentRefs": [{"name": "edge", "namespace": "scaleladder-gateway"}],
            "rules": [{"backendRefs": [{"name": backend, "port": port}]}],
        },
    }


def namespace() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": META.namespace, "labels": META.labels("ns", "namespace")},
    }


def changed(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `obj` with the dotted `path` (list indices as numbers) set to `value`; None deletes."""
    copied = copy.deepcopy(obj)
    *parents, last = path.split(".")
    target: Any = copied
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is None:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return copied


def stack(*objects: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects with a namespace and the NetworkPolicies derived from them."""
    listed = [namespace(), *objects]
    return [*listed, *network_policies(META, listed)]


def job_sharing_labels_with(workload: dict[str, Any], name: str = "app-setup") -> dict[str, Any]:
    """A Job whose pods carry `workload`'s pod labels: what a bootstrap Job must not do."""
    template = copy.deepcopy(workload["spec"]["template"])
    template["spec"]["restartPolicy"] = "OnFailure"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": META.metadata(name, "bootstrap"),
        "spec": {"template": template},
    }
