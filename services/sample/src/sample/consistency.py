"""Read-your-writes: after a write, the client's reads go to the primary for READ_YOUR_WRITES_SECONDS.

The marker is a short-lived cookie holding the time until which reads must be fresh, so it works
on any replica of the service and keeps nothing in process memory.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "ryw"


def mark_written(response: Response, window_seconds: int, secure: bool) -> None:
    if window_seconds > 0:
        until = str(int(time.time()) + window_seconds)
        response.set_cookie(COOKIE, until, max_age=window_seconds, httponly=True, secure=secure, samesite="lax")


def wants_fresh(request: Request) -> bool:
    """True while the client's last write is younger than the window: read from the primary."""
    if not any(name == b"cookie" for name, _ in request.scope["headers"]):
        return False  # the common case, decided without parsing headers into objects
    value = request.cookies.get(COOKIE)
    return value is not None and value.isdigit() and int(value) >= time.time()
