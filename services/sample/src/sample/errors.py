"""API errors: one JSON shape, {"error": {"status", "code", "message"}}, for every 4xx and 5xx."""

from __future__ import annotations

import logging

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode


class ApiError(Exception):
    """A client-facing error: HTTP status, a stable code and a message naming the field, value and rule."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(status: int, code: str, message: str) -> bytes:
    return _encode({"error": {"status": status, "code": code, "message": message}})


def error_response(status: int, code: str, message: str) -> Response:
    return Response(error_body(status, code, message), status, media_type="application/json")


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = error_response(exc.status, exc.code, exc.message)
    response.headers.update(exc.headers)
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route: 404, wrong method: 405) in the same JSON shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    response = error_response(exc.status_code, code, message)
    response.headers.update(exc.headers or {})
    return response


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path, "method": request.method})
    return error_response(500, "internal", "internal server error")


HANDLERS = {ApiError: api_error, HTTPException: http_error, Exception: unexpected_error}
