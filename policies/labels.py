"""Object rule: the recommended `app.kubernetes.io/*` labels on every object and pod template."""

from __future__ import annotations

from collections.abc import Iterator

from policies.model import Object, pod_spec, pod_template_labels, ref

RECOMMENDED = tuple(
    f"app.kubernetes.io/{label}" for label in ("name", "instance", "component", "part-of", "version", "managed-by")
)


def _missing(labels: dict[str, str]) -> list[str]:
    return [label for label in RECOMMENDED if not labels.get(label)]


def recommended_labels(obj: Object) -> Iterator[str]:
    missing = _missing(obj.get("metadata", {}).get("labels") or {})
    if missing:
        yield f"{ref(obj)}: metadata.labels lacks {', '.join(missing)}; fix: label it with Meta.metadata(...)"
    found = pod_spec(obj)
    if found is not None and obj.get("kind") != "Pod":
        path = found[0].removesuffix(".spec") + ".metadata.labels"
        missing = _missing(pod_template_labels(obj))
        if missing:
            yield f"{ref(obj)}: {path} lacks {', '.join(missing)}; fix: label the pods with Meta.labels(...)"
