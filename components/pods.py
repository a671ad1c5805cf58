"""Pieces every pod spec is built from: resources, probes, hardened security contexts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from components.labels import Meta
from components.settings import setting

QUANTITY = r"[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi)?"


@dataclass(frozen=True)
class Resources:
    """Requests are what the scheduler reserves (and what HPA percentages are of); limits cap use."""

    cpu_request: str = setting("100m", "CPU reserved for the container", pattern=QUANTITY)
    memory_request: str = setting("128Mi", "memory reserved for the container", pattern=QUANTITY)
    cpu_limit: str = setting("1", "CPU the container is throttled at", pattern=QUANTITY)
    memory_limit: str = setting("256Mi", "memory at which the container is OOM-killed", pattern=QUANTITY)

    def render(self) -> dict[str, Any]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


def http_probe(path: str, port: int | str, *, period: int, failure_threshold: int, timeout: int = 2) -> dict[str, Any]:
    """An HTTP GET probe; `period` x `failure_threshold` seconds is how long a failure is tolerated."""
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failure_threshold,
    }


def exec_probe(command: list[str], *, period: int, failure_threshold: int, timeout: int = 5) -> dict[str, Any]:
    """A probe that runs `command` in the container; exit 0 is success."""
    return {
        "exec": {"command": command},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failure_threshold,
    }


def container_security(*, user: int | None = None, read_only_root: bool = True) -> dict[str, Any]:
    """No privilege escalation, every capability dropped, root filesystem read-only by default.

    `user` pins the container's uid and gid where its pod runs containers of several images.
    """
    identity = {} if user is None else {"runAsUser": user, "runAsGroup": user}
    return {
        **identity,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security(user: int) -> dict[str, Any]:
    """Run as `user` (never root), files owned by its group, seccomp RuntimeDefault."""
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "fsGroup": user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def spread(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Spread replicas across nodes, then zones; skew of one, best effort so one node still works."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]


def config_map(metadata: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def job(
    meta: Meta,
    owner: str,
    task: str,
    *,
    ran_for: str = "",
    component: str,
    user: int,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    backoff_limit: int,
    deadline_seconds: int,
) -> dict[str, Any]:
    """A run-to-completion Job `<owner>-<task>-<digest>`, the digest of its spec and of `ran_for`.

    Kubernetes never lets a Job's pod template change, so any change to what the Job runs (an
    image, an env var, a shape) gives it a new name: the deployer creates the new Job and deletes
    the old one instead of replacing one under the same name. `ran_for` is a reason to run again
    that the spec does not show (the web release an edge-cache purge is for).

    Its pods are labelled `<owner>-<task>`, never `<owner>`: no Service or PodDisruptionBudget of
    the owner may select them (a Service would send traffic to a pod that does not serve it).
    """
    spec = {
        "backoffLimit": backoff_limit,
        "activeDeadlineSeconds": deadline_seconds,
        "template": {
            "metadata": {"labels": meta.labels(f"{owner}-{task}", component)},
            "spec": {
                "restartPolicy": "OnFailure",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security(user),
                "containers": containers,
                "volumes": volumes,
            },
        },
    }
    digest = hashlib.sha256(json.dumps([ran_for, spec], sort_keys=True).encode()).hexdigest()[:8]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta.metadata(owner, component, object_name=f"{owner}-{task}-{digest}"),
        "spec": spec,
    }
