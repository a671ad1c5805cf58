"""Object rules on every container of a workload: images, resources, probes, security, secrets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from policies.model import Container, Object, containers, long_running, pod_spec, ref

_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_KEY|CREDENTIALS?|(^|_)AUTH$)")
_NOT_A_VALUE = re.compile(r"_(FILE|PATH|DIR|USER|USERNAME|NAME|REF)$")
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]+:([^@\s]+)@")
SECRET_MODE = 0o440
"""The most a Secret file may allow: read by its owner and the pod's fsGroup, nothing else."""
MIN_ID = 10000
"""The lowest uid and gid a container may run as: host system users and groups sit far below it."""
SECRET_FILE_FIX = (
    "fix: mount the Secret as a read-only file (a projected volume, mode 0440) and pass its path in "
    "<NAME>_FILE (components.pods.secret_file_env)"
)


def image_tag(image: str) -> tuple[str | None, bool]:
    """(tag, pinned by digest) of an image reference such as `registry:5000/app:1.2@sha256:...`."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    return tag, digest.startswith("sha256:")


def pinned_image(obj: Object) -> Iterator[str]:
    for c in containers(obj):
        image = str(c.spec.get("image", ""))
        tag, digest = image_tag(image)
        if digest:
            continue
        if tag is None or tag == "latest":
            problem = "has no tag" if tag is None else "uses the moving tag `latest`"
            repository = image.rsplit(":", 1)[0] if tag else image
            yield (
                f"{ref(obj)}: container {c.name} image {image!r} ({c.field('image')}) {problem}; "
                f"fix: pin an explicit version, e.g. {repository or 'image'}:1.2.3 or @sha256:<digest>"
            )


def resources(obj: Object) -> Iterator[str]:
    for c in containers(obj):
        declared: dict[str, Any] = c.spec.get("resources") or {}
        missing = [
            f"{kind}.{resource}"
            for kind in ("requests", "limits")
            for resource in ("cpu", "memory")
            if not (declared.get(kind) or {}).get(resource)
        ]
        if missing:
            yield (
                f"{ref(obj)}: container {c.name} has no {', '.join(missing)} ({c.field('resources')}); "
                "fix: set cpu and memory requests and limits (components.pods.Resources)"
            )


def probes(obj: Object) -> Iterator[str]:
    for c in long_running(obj):
        missing = [probe for probe in ("readinessProbe", "livenessProbe") if not c.spec.get(probe)]
        if missing:
            yield (
                f"{ref(obj)}: container {c.name} has no {' and no '.join(missing)} ({c.path}); "
                "fix: add a readiness probe (can it serve?) and a liveness probe (is the process stuck?)"
            )
        elif c.spec["readinessProbe"] == c.spec["livenessProbe"]:
            yield (
                f"{ref(obj)}: container {c.name} readinessProbe is the same as its livenessProbe "
                f"({c.field('readinessProbe')}); fix: make readiness check what serving needs and liveness "
                "only the process, so a failing dependency takes pods out of the Service instead of restarting them"
            )


def _slow_start(obj: Object, c: Container) -> str | None:
    if obj.get("kind") == "StatefulSet":
        return "it belongs to a StatefulSet (recovers data and rejoins its peers on start)"
    delay = (c.spec.get("livenessProbe") or {}).get("initialDelaySeconds", 0)
    if delay:
        return f"its livenessProbe waits initialDelaySeconds={delay} for start-up"
    return None


def startup_probe(obj: Object) -> Iterator[str]:
    for c in long_running(obj):
        reason = _slow_start(obj, c)
        if reason and not c.spec.get("startupProbe"):
            yield (
                f"{ref(obj)}: container {c.name} has no startupProbe ({c.field('startupProbe')}) although start-up "
                f"is slow: {reason}; fix: add a startupProbe allowing the whole start-up, so liveness cannot "
                "restart it mid-start"
            )


def _security(c: Container) -> dict[str, Any]:
    security: dict[str, Any] = c.spec.get("securityContext") or {}
    return security


def _pod_security(obj: Object) -> tuple[str, Object] | None:
    """(path of the pod spec, its securityContext) of a workload; None for anything that runs no pods."""
    found = pod_spec(obj)
    if found is None:
        return None
    path, pod = found
    security: Object = pod.get("securityContext") or {}
    return path, security


def non_root(obj: Object) -> Iterator[str]:
    found = _pod_security(obj)
    if found is None:
        return
    path, pod_security = found
    if pod_security.get("runAsUser") == 0:
        yield f"{ref(obj)}: {path}.securityContext.runAsUser is 0 (root); fix: run as a non-zero uid"
    for c in containers(obj):
        security = _security(c)
        if security.get("runAsUser") == 0:
            yield (
                f"{ref(obj)}: container {c.name} {c.field('securityContext.runAsUser')} is 0 (root); "
                "fix: run as a non-zero uid"
            )
        if not security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
            yield (
                f"{ref(obj)}: container {c.name} may run as root: neither {path}.securityContext.runAsNonRoot nor "
                f"{c.field('securityContext.runAsNonRoot')} is true; fix: set runAsNonRoot: true "
                "(components.pods.pod_security)"
            )


def no_privilege_escalation(obj: Object) -> Iterator[str]:
    for c in containers(obj):
        security = _security(c)
        problems = []
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append("allowPrivilegeEscalation is not false")
        if security.get("privileged"):
            problems.append("privileged is true")
        if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
            problems.append("capabilities.drop does not list ALL")
        if problems:
            yield (
                f"{ref(obj)}: container {c.name} {c.field('securityContext')}: {'; '.join(problems)}; fix: set "
                "allowPrivilegeEscalation: false and capabilities.drop: [ALL] (components.pods.container_security)"
            )


def read_only_root(obj: Object) -> Iterator[str]:
    for c in containers(obj):
        if _security(c).get("readOnlyRootFilesystem") is not True:
            yield (
                f"{ref(obj)}: container {c.name} {c.field('securityContext.readOnlyRootFilesystem')} is not true; "
                "fix: set it and mount an emptyDir where the image writes, or annotate the object "
                "scaleladder.io/policy-exception.read-only-root with the reason the image needs a writable root"
            )


def secret_env_literal(obj: Object) -> Iterator[str]:
    for c in containers(obj):
        for index, env in enumerate(c.spec.get("env") or []):
            name, value = str(env.get("name", "")), env.get("value")
            if not isinstance(value, str) or not value:
                continue
            where = c.field(f"env[{index}]")
            if _SECRET_NAME.search(name) and not _NOT_A_VALUE.search(name):
                yield (
                    f"{ref(obj)}: container {c.name} env {name} ({where}.value) holds a secret as a literal; "
                    + SECRET_FILE_FIX
                )
            match = _URL_PASSWORD.search(value)
            if match and not match.group(1).startswith("$("):
                yield (
                    f"{ref(obj)}: container {c.name} env {name} ({where}.value) embeds a password in a URL; fix: "
                    "leave the password out of the URL and pass the path of its Secret file in <NAME>_PASSWORD_FILE"
                )


def _number(value: Any) -> int | None:
    """An integer field as a rule compares it: the engine hands every number over as a float."""
    return None if value is None else int(value)


def _item_modes(where: str, items: list[Object]) -> list[tuple[str, int | None]]:
    return [(f"{where}.items[{i}].mode", _number(item["mode"])) for i, item in enumerate(items) if "mode" in item]


def _secret_volumes(pod: Object) -> dict[str, list[tuple[str, int | None]]]:
    """Volumes holding Secret data: name -> (field, mode) of every mode that applies, None if unset."""
    found: dict[str, list[tuple[str, int | None]]] = {}
    for index, volume in enumerate(pod.get("volumes") or []):
        where = f"volumes[{index}]"
        if "secret" in volume:
            secret = volume["secret"]
            found[volume["name"]] = [
                (f"{where}.secret.defaultMode", _number(secret.get("defaultMode"))),
                *_item_modes(f"{where}.secret", secret.get("items") or []),
            ]
        projected = volume.get("projected") or {}
        sources = list(enumerate(projected.get("sources") or []))
        secrets = [(f"{where}.projected.sources[{i}].secret", s["secret"]) for i, s in sources if "secret" in s]
        if secrets:
            found[volume["name"]] = [
                (f"{where}.projected.defaultMode", _number(projected.get("defaultMode"))),
                *(mode for field, secret in secrets for mode in _item_modes(field, secret.get("items") or [])),
            ]
    return found


def secret_file(obj: Object) -> Iterator[str]:
    found = pod_spec(obj)
    if found is None:
        return
    path, pod = found
    volumes = _secret_volumes(pod)
    for name, modes in volumes.items():
        for where, mode in modes:
            if mode is None or mode & ~SECRET_MODE & 0o777:
                shown = "unset (0644)" if mode is None else f"0{mode:o}"
                yield (
                    f"{ref(obj)}: Secret volume {name} {path}.{where} is {shown}; fix: at most 0440 (owner and "
                    "the pod's fsGroup read, nobody writes or runs it, others nothing)"
                )
    for c in containers(obj):
        for index, env in enumerate(c.spec.get("env") or []):
            source = env.get("valueFrom") or {}
            if "secretKeyRef" in source:
                ref_ = source["secretKeyRef"]
                yield (
                    f"{ref(obj)}: container {c.name} env {env.get('name')} ({c.field(f'env[{index}]')}.valueFrom."
                    f"secretKeyRef) reads Secret {ref_.get('name')} key {ref_.get('key')} into the environment, "
                    f"where every child process and crash report sees it; {SECRET_FILE_FIX}"
                )
        for index, env_from in enumerate(c.spec.get("envFrom") or []):
            if "secretRef" in env_from:
                yield (
                    f"{ref(obj)}: container {c.name} {c.field(f'envFrom[{index}]')}.secretRef puts every key of "
                    f"Secret {env_from['secretRef'].get('name')} into the environment; {SECRET_FILE_FIX}"
                )
        for index, mount in enumerate(c.spec.get("volumeMounts") or []):
            if mount.get("name") in volumes and mount.get("readOnly") is not True:
                yield (
                    f"{ref(obj)}: container {c.name} mounts Secret volume {mount['name']} writable "
                    f"({c.field(f'volumeMounts[{index}]')}.readOnly is not true); fix: mount it readOnly: true"
                )


def high_ids(obj: Object) -> Iterator[str]:
    found = _pod_security(obj)
    if found is None:
        return
    path, pod_security = found
    fs_group = _number(pod_security.get("fsGroup"))
    if fs_group is not None and fs_group < MIN_ID:
        yield (
            f"{ref(obj)}: {path}.securityContext.fsGroup is {fs_group}, below {MIN_ID}; fix: give the pod's "
            f"volumes a group of {MIN_ID} or more (components.pods.pod_security)"
        )
    for c in containers(obj):
        security = _security(c)
        for field in ("runAsUser", "runAsGroup"):
            value = _number(security.get(field, pod_security.get(field)))
            if value is None or value < MIN_ID:
                shown = "unset (the image decides)" if value is None else f"{value}, below {MIN_ID}"
                yield (
                    f"{ref(obj)}: container {c.name} runs with {field} {shown} ({c.field(f'securityContext.{field}')} "
                    f"or {path}.securityContext.{field}); fix: run every container as a uid and gid of {MIN_ID} or "
                    "more, which no host system user or group has (components.pods.pod_security)"
                )
