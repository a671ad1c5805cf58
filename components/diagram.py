"""A stack's topology as a Mermaid flowchart, drawn from the same objects `render` writes.

Edges are read from the objects, not drawn by hand (components/topology.py): a route points at
the Services in its backends, a Service at the workloads its selector matches, and a workload at
every Service it connects to — the same connections the NetworkPolicies allow.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from components import topology
from components.topology import ROUTES, WORKLOADS, node_id


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


def edges(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(from, to) node ids: route → Service, Service → workload, workload → Service it calls."""
    pairs = [*topology.routes(objects), *topology.selected(objects), *topology.calls(objects)]
    return list(dict.fromkeys((node_id(source), node_id(target)) for source, target in pairs))


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
        **{
            o["spec"]["scaleTargetRef"]["name"]: f"HPA {o['spec'].get('minReplicas', 1)}-{o['spec']['maxReplicas']}"
            for o in objects
            if o["kind"] == "HorizontalPodAutoscaler"
        },
        **{
            o["spec"]["scaleTargetRef"]["name"]: f"KEDA {o['spec']['minReplicaCount']}-{o['spec']['maxReplicaCount']}"
            for o in objects
            if o["kind"] == "ScaledObject"
        },
    }
    shown = [o for o in objects if o["kind"] in (*WORKLOADS, *ROUTES, "Service")]
    lines = ["flowchart LR"]
    for obj in shown:
        shape = ("[[", "]]") if obj["kind"] == "Job" else ("([", "])") if obj["kind"] == "Service" else ("[", "]")
        lines.append(f'  {node_id(obj)}{shape[0]}"{_label(obj, autoscaled)}"{shape[1]}')
    lines += [f"  {source} --> {target}" for source, target in edges(objects)]
    return "\n".join(lines) + "\n"
