"""A stack's topology as a Mermaid flowchart, drawn from the same objects `render` writes.

Edges are read from the objects, not drawn by hand: a route points at the Services in its
backends, a Service at the workloads its selector matches, and a workload at every Service its
containers name as a host in their environment (`postgres-rw:5432`, `redis://redis:6379`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

WORKLOADS = ("Deployment", "StatefulSet", "Job", "DaemonSet")
ROUTES = ("HTTPRoute", "Ingress")


def node_id(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}_{obj['metadata']['name']}".replace("-", "_")


def _label(obj: dict[str, Any], autoscaled: dict[str, str]) -> str:
    kind, name = obj["kind"], obj["metadata"]["name"]
    spec = obj.get("spec", {})
    if kind in ("Deployment", "StatefulSet"):
        count = autoscaled.get(name) or f"x{spec.get('replicas', 1)}"
        return f"{kind} {name} {count}<br/>{_containers(spec['template']['spec'])}"
    if kind == "Service" and spec.get("clusterIP") == "None":
        return f"headless Service {name}"
    return f"{kind} {name}"


def _containers(pod: dict[str, Any]) -> str:
    """`postgres (sidecar), migrate (init), web`: what runs in the pod, in start order."""
    names = [
        f"{c['name']} ({'sidecar' if c.get('restartPolicy') == 'Always' else 'init'})"
        for c in pod.get("initContainers", [])
    ]
    return ", ".join(names + [c["name"] for c in pod["containers"]])


def _pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = obj["spec"]["template"]["metadata"].get("labels", {})
    return labels


def _container_text(obj: dict[str, Any]) -> str:
    pod = obj["spec"]["template"]["spec"]
    texts = []
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        texts += [str(env.get("value", "")) for env in container.get("env", [])]
        texts += [str(arg) for arg in container.get("args", []) + container.get("command", [])]
    return "\n".join(texts)


def _backends(route: dict[str, Any]) -> Iterator[str]:
    if route["kind"] == "HTTPRoute":
        for rule in route["spec"].get("rules", []):
            for ref in rule.get("backendRefs", []):
                yield ref["name"]
    else:
        for rule in route["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                yield path["backend"]["service"]["name"]


def edges(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(from, to) node ids: route → Service, Service → workload, workload → Service it calls."""
    services = [o for o in objects if o["kind"] == "Service"]
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    found: list[tuple[str, str]] = []
    for route in (o for o in objects if o["kind"] in ROUTES):
        found += [(node_id(route), f"Service_{name}".replace("-", "_")) for name in _backends(route)]
    for service in services:
        selector = service["spec"].get("selector") or {}
        for workload in workloads:
            if selector and selector.items() <= _pod_labels(workload).items():
                found.append((node_id(service), node_id(workload)))
    for workload in workloads:
        text = _container_text(workload)
        for service in services:
            name = re.escape(service["metadata"]["name"])
            if re.search(rf"(?<![\w.-]){name}(\.[\w.-]+)?:\d+", text):
                found.append((node_id(workload), node_id(service)))
    return list(dict.fromkeys(found))


MARKDOWN_BLOCK = re.compile(r"(<!-- diagram: (\S+) -->\n```mermaid\n)(.*?)(```)", re.DOTALL)
"""A diagram embedded in Markdown: the marker names the stack, the fenced block is its flowchart."""


def refresh_markdown(text: str, draw: Callable[[str], str]) -> str:
    """`text` with every embedded diagram redrawn by `draw(stack)` (a flowchart without title)."""
    return MARKDOWN_BLOCK.sub(lambda m: m.group(1) + draw(m.group(2)) + m.group(4), text)


def mermaid(objects: list[dict[str, Any]], title: str) -> str:
    """A `flowchart LR` of every route, Service and workload, with the edges above."""
    return f"---\ntitle: {title}\n---\n" + flowchart(objects)


def flowchart(objects: list[dict[str, Any]]) -> str:
    """The flowchart itself, as README.md embeds it."""
    autoscaled = {
        o["spec"]["scaleTargetRef"]["name"]: f"HPA {o['spec'].get('minReplicas', 1)}-{o['spec']['maxReplicas']}"
        for o in objects
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    shown = [o for o in objects if o["kind"] in (*WORKLOADS, *ROUTES, "Service")]
    lines = ["flowchart LR"]
    for obj in shown:
        shape = ("[[", "]]") if obj["kind"] == "Job" else ("([", "])") if obj["kind"] == "Service" else ("[", "]")
        lines.append(f'  {node_id(obj)}{shape[0]}"{_label(obj, autoscaled)}"{shape[1]}')
    lines += [f"  {source} --> {target}" for source, target in edges(objects)]
    return "\n".join(lines) + "\n"
