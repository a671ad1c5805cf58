"""Pieces every pod spec is built from: resources, probes, hardened security contexts, secret files.

Every container runs as a uid and gid of 10000 or more, one per part of the stack (each module's
`RUN_AS`): a container that escapes can then own no file of a host's system users (which sit below
1000) nor of another part. Secrets reach containers only as read-only files under `SECRETS_DIR`,
never as environment variables (those show up in /proc/*/environ, crash reports and child processes).
"""

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


SECRETS_DIR = "/run/secrets"
SECRETS_VOLUME = "secrets"
SECRET_FILE_MODE = 0o440  # owner root, group the pod's fsGroup: read-only, for the pod's users alone


def secret_file(secret: str, key: str) -> str:
    """Where a container reads key `key` of Secret `secret`: `/run/secrets/<secret>/<key>`."""
    return f"{SECRETS_DIR}/{secret}/{key}"


def secret_file_env(name: str, secret: str, key: str) -> dict[str, Any]:
    """Env var `name` holding the path of a Secret file (the file, not the value, is in the spec)."""
    return {"name": name, "value": secret_file(secret, key)}


def _secret_files(container: dict[str, Any]) -> set[tuple[str, str]]:
    prefix = f"{SECRETS_DIR}/"
    found = set()
    for variable in container.get("env", []):
        value = variable.get("value", "")
        if value.startswith(prefix) and value.count("/") == SECRETS_DIR.count("/") + 2:
            secret, key = value.removeprefix(prefix).split("/")
            found.add((secret, key))
    return found


def mount_secret_files(pod: dict[str, Any]) -> dict[str, Any]:
    """`pod` with the Secret files its containers' env names (`secret_file_env`) mounted.

    One projected volume holds every such file at `<secret>/<key>`, mode 0440; only the containers
    that name a file mount it, read-only, at SECRETS_DIR. A pod that names none is returned as is.
    """
    containers = [*pod.get("initContainers", []), *pod.get("containers", [])]
    files = sorted(set().union(*(_secret_files(c) for c in containers)))
    if not files:
        return pod
    by_secret: dict[str, list[str]] = {}
    for secret, key in files:
        by_secret.setdefault(secret, []).append(key)
    sources = [
        {"secret": {"name": secret, "items": [{"key": key, "path": f"{secret}/{key}"} for key in keys]}}
        for secret, keys in by_secret.items()
    ]
    volume = {"name": SECRETS_VOLUME, "projected": {"defaultMode": SECRET_FILE_MODE, "sources": sources}}
    mount = {"name": SECRETS_VOLUME, "mountPath": SECRETS_DIR, "readOnly": True}

    def mounted(container: dict[str, Any]) -> dict[str, Any]:
        if not _secret_files(container):
            return container
        return {**container, "volumeMounts": [*container.get("volumeMounts", []), mount]}

    result = {**pod, "volumes": [*pod.get("volumes", []), volume]}
    for field in ("initContainers", "containers"):
        if field in pod:
            result[field] = [mounted(c) for c in pod[field]]
    return result


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
            "spec": mount_secret_files(
                {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(user),
                    "containers": containers,
                    "volumes": volumes,
                }
            ),
        },
    }
    digest = hashlib.sha256(json.dumps([ran_for, spec], sort_keys=True).encode()).hexdigest()[:8]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta.metadata(owner, component, object_name=f"{owner}-{task}-{digest}"),
        "spec": spec,
    }
