"""Routes that own their path: every method of a path is one route, so a method the path lacks is a 405
whose Allow header lists exactly the methods it has, never a fall-through to a later route whose
template also matches (`PATCH /products/batch-get` is not `PATCH /products/{id}`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]


class PathRoute(Route):
    """`PathRoute("/products", get=list_products, post=create_product)`; GET also answers HEAD.

    Literal paths must come before templates that also match them (`/products/batch-get` before
    `/products/{id}`): the first route whose path matches answers, whatever the method.
    """

    def __init__(self, path: str, **handlers: Handler) -> None:
        self.handlers = {method.upper(): handler for method, handler in handlers.items()}
        if "GET" in self.handlers:
            self.handlers["HEAD"] = self.handlers["GET"]
        self.allow = ", ".join(sorted(self.handlers))
        super().__init__(path, self.dispatch, methods=list(self.handlers))

    async def dispatch(self, request: Request) -> Response:
        return await self.handlers[request.method](request)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        return (Match.FULL if match is Match.PARTIAL else match), child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in self.handlers:
            raise HTTPException(405, headers={"Allow": self.allow})
        await self.app(scope, receive, send)
