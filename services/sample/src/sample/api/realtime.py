"""GET /realtime/connections: open realtime connections of this process and of every process (for KEDA)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from sample.errors import ApiError
from sample.responses import encode
from sample.routing import PathRoute
from sample.services import of


async def connections(request: Request) -> Response:
    """{"process": n, "total": N, "processes": k}; `total` is what the KEDA metrics-api trigger reads."""
    svc = of(request)
    if svc.totals is None:
        raise ApiError(404, "events_disabled", "events: off in this deployment (EVENTS_ENABLED=false)")
    await svc.totals.report()  # this process's own entry is current, the others are at most REPORT_SECONDS old
    total, processes = await svc.totals.read()
    body = encode({"process": len(svc.realtime), "total": total, "processes": processes})
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


ROUTES = [PathRoute("/realtime/connections", get=connections)]
