"""Probes and metrics: /healthz (alive, no dependency calls), /readyz (dependencies, bounded), /metrics."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from sample import lifecycle, metrics, redisconn
from sample.responses import encode
from sample.routing import PathRoute
from sample.services import of

HEALTHY = encode({"status": "ok"})


async def healthz(request: Request) -> Response:
    return Response(HEALTHY, media_type="application/json", headers={"cache-control": "no-store"})


async def readyz(request: Request) -> Response:
    """200 when the primary (and Redis, NATS if configured) answer within READY_TIMEOUT_MS, else 503 naming which;
    also 503 while draining and, with events on, at REALTIME_MAX_CONNECTIONS (new connections go elsewhere)."""
    svc = of(request)
    timeout = svc.settings.ready_timeout_ms / 1000
    checks = {"postgres": svc.db.ping_primary()}
    if svc.redis is not None:
        checks["redis"] = redisconn.ping(svc.redis, timeout)
    if svc.jobs is not None:
        checks["nats"] = svc.jobs.ping(timeout)
    results = await asyncio.gather(*checks.values(), return_exceptions=True)
    status = {
        name: "ok" if not isinstance(r, BaseException) else f"down: {type(r).__name__}: {r}"[:200]
        for name, r in zip(checks, results, strict=True)
    }
    status["replicas_healthy"] = f"{sum(r.healthy for r in svc.db.replicas)}/{len(svc.db.replicas)}"
    if lifecycle.draining():
        status["process"] = "draining"
    at_capacity = svc.events is not None and svc.realtime.at_capacity
    if svc.events is not None:
        count = f"{len(svc.realtime)}/{svc.realtime.cap}"
        status["connections"] = f"at capacity: {count}" if at_capacity else count
    ready = all(v == "ok" for k, v in status.items() if k in checks) and not lifecycle.draining() and not at_capacity
    body = encode({"status": "ready" if ready else "not ready", "checks": status})
    return Response(body, 200 if ready else 503, media_type="application/json", headers={"cache-control": "no-store"})


async def metrics_endpoint(request: Request) -> Response:
    body, content_type = metrics.exposition()
    return Response(body, headers={"content-type": content_type, "cache-control": "no-store"})


ROUTES = [
    PathRoute("/healthz", get=healthz),
    PathRoute("/readyz", get=readyz),
    PathRoute("/metrics", get=metrics_endpoint),
]
