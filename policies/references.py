"""Stack rules on references: every Service reaches pods, every route reaches a Service port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from components.topology import selects
from policies.model import WORKLOAD_KINDS, Finding, Object, pod_template_labels, ref


def _pods(objects: list[Object]) -> list[dict[str, str]]:
    return [pod_template_labels(o) if o["kind"] != "Pod" else o["metadata"].get("labels") or {} for o in objects]


def service_selects_workload(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    pods = _pods([o for o in objects if o.get("kind") in WORKLOAD_KINDS])
    for service in (o for o in objects if o.get("kind") == "Service"):
        if service["spec"].get("type") == "ExternalName":
            continue
        selector: dict[str, str] = service["spec"].get("selector") or {}
        if not selector:
            yield (
                service,
                f"{ref(service)}: spec.selector is empty, so the Service has no endpoints the stack manages; "
                "fix: select the pods of the workload it fronts",
            )
        elif not any(selects(selector, labels) for labels in pods):
            yield (
                service,
                f"{ref(service)}: spec.selector {selector} matches the pods of no workload in the stack; "
                "fix: use the workload's selector labels (Meta.selector)",
            )
        for job in (o for o in objects if o.get("kind") == "Job"):
            if selector and selector.items() <= pod_template_labels(job).items():
                yield (
                    service,
                    f"{ref(service)}: spec.selector {selector} also matches the pods of {ref(job)}, which would "
                    "receive the Service's traffic while they run; fix: give the Job's pods their own "
                    "app.kubernetes.io/name (e.g. <name>-bootstrap)",
                )


def _backends(route: Object) -> Iterator[tuple[str, str, Any]]:
    """(field path, Service name, port) of each backend of an HTTPRoute or Ingress."""
    for r, rule in enumerate(route["spec"].get("rules") or []):
        if route["kind"] == "HTTPRoute":
            for b, backend in enumerate(rule.get("backendRefs") or []):
                if backend.get("kind", "Service") == "Service" and backend.get("group", "") == "":
                    yield f"spec.rules[{r}].backendRefs[{b}]", backend["name"], backend.get("port")
        else:
            for p, path in enumerate((rule.get("http") or {}).get("paths") or []):
                service = path["backend"].get("service") or {}
                port = service.get("port") or {}
                where = f"spec.rules[{r}].http.paths[{p}].backend.service"
                yield where, service.get("name", ""), port.get("number", port.get("name"))
    default = (route["spec"].get("defaultBackend") or {}).get("service")
    if route["kind"] == "Ingress" and default:
        port = default.get("port") or {}
        yield "spec.defaultBackend.service", default.get("name", ""), port.get("number", port.get("name"))


def route_backend_exists(objects: list[Object], phase: int | None) -> Iterator[Finding]:
    services = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Service"}
    for route in (o for o in objects if o.get("kind") in ("HTTPRoute", "Ingress")):
        for where, name, port in _backends(route):
            service = services.get(name)
            if service is None:
                yield (
                    route,
                    f"{ref(route)}: {where} names Service {name!r}, which is not in the stack; "
                    f"fix: point it at one of {sorted(services) or 'the stack Services (there are none)'}",
                )
                continue
            ports = [p.get(key) for p in service["spec"].get("ports") or [] for key in ("port", "name")]
            if port is not None and port not in ports:
                yield (
                    route,
                    f"{ref(route)}: {where} uses port {port!r}, which Service {name} does not expose; "
                    f"fix: use one of its ports {[p['port'] for p in service['spec'].get('ports') or []]}",
                )
