"""The ASGI application: routes, middleware and the lifespan that opens and closes the pools.

`create_app()` is the uvicorn factory: it reads the environment itself, so every worker process
builds its own pools.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from sample import failover, openapi, roles
from sample.api import events, health, jobs, orders, products, realtime, users, websocket
from sample.config import Settings, load_settings
from sample.errors import HANDLERS
from sample.metrics import MetricsMiddleware
from sample.ratelimit import RateLimitMiddleware
from sample.responses import encode
from sample.routing import PathRoute
from sample.services import Services

STATIC_MAX_AGE = 86400


class CachedStaticFiles(StaticFiles):
    """Packaged images and styles, with a day of public caching on top of StaticFiles' ETag/Last-Modified."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["cache-control"] = f"public, max-age={STATIC_MAX_AGE}"
        return response


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()
    services = Services.build(settings)
    document = openapi.document()
    document["paths"] = {path: ops for path, ops in document["paths"].items() if roles.serves(settings.role, path)}
    spec = encode(document)

    async def openapi_json(request: Request) -> Response:
        return Response(spec, media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    middleware = [Middleware(MetricsMiddleware)]
    if services.limiter is not None:
        middleware.append(Middleware(RateLimitMiddleware, services.limiter, services.sessions, settings))
    static = resources.files("sample") / "static"
    every_route = [  # routes are matched in order: the hottest first
        *products.ROUTES,
        *health.ROUTES,
        *users.ROUTES,
        *orders.ROUTES,
        *jobs.ROUTES,
        *events.ROUTES,
        *websocket.ROUTES,
        *realtime.ROUTES,
        PathRoute("/openapi.json", get=openapi_json),
        Mount("/static", CachedStaticFiles(directory=str(static)), name="static"),
    ]
    app = Starlette(
        routes=[route for route in every_route if roles.serves(settings.role, route.path)],  # type: ignore[attr-defined]
        middleware=middleware,
        exception_handlers={**HANDLERS, **failover.HANDLERS},
        lifespan=lifespan,
    )
    app.state.services = services
    return app
