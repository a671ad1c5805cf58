"""JSON responses with ETag / If-None-Match (304), gzip for larger bodies, and Cache-Control."""

from __future__ import annotations

import gzip
import hashlib

import msgspec
from starlette.requests import Request
from starlette.responses import Response

GZIP_MIN_BYTES = 1024
NO_STORE = "no-store"
PRIVATE = "private, no-cache"

encode = msgspec.json.Encoder().encode


def public(max_age: int) -> str:
    """Cache-Control for shared-cacheable reads (catalog): CDN and browsers may keep it `max_age` seconds."""
    return f"public, max-age={max_age}" if max_age > 0 else "no-cache"


class JsonResponse(Response):
    """A Response with prebuilt raw headers: this path runs on every API request."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        if status != 304:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        self.raw_headers = headers


def json_response(request: Request, body: bytes, *, status: int = 200, cache_control: str = NO_STORE) -> Response:
    """`body` (encoded JSON) as a response; GET/HEAD 200s get a weak ETag and may become a bodiless 304."""
    headers = [(b"cache-control", cache_control.encode()), (b"vary", b"Accept-Encoding")]
    if status == 200 and request.method in ("GET", "HEAD"):
        etag = b'W/"' + hashlib.blake2b(body, digest_size=8).hexdigest().encode() + b'"'
        headers.append((b"etag", etag))
        if _matches(request.headers.get("if-none-match"), etag.decode()):
            return JsonResponse(b"", 304, headers)
    if len(body) >= GZIP_MIN_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(body, compresslevel=5, mtime=0)
        headers.append((b"content-encoding", b"gzip"))
    return JsonResponse(body, status, headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = etag[2:]
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))
