"""The ceiling: a bare Starlette app that returns fixed JSON bytes (the file CEILING_BODY) at any path.

Served by the same uvicorn settings as the service (uvloop, httptools, no access log), it measures
what the framework and server cost before the service does any work.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = Path(os.environ["CEILING_BODY"]).read_bytes()


async def product(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/products/{id}", product)])
