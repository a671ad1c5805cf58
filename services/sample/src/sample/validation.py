"""Turning request input into typed values, or a 4xx whose message names the field, value and rule."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from sample.cursor import MAX_ID
from sample.errors import ApiError
from sample.models import NO_NUL

T = TypeVar("T")
_PATH = re.compile(r" - at `\$(.*)`$")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 once it exceeds MAX_BODY_BYTES (checked while streaming, not trusted from headers)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body: more than {limit} bytes, allowed: at most {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_body(request: Request, model: type[T], limit: int) -> T:
    """The JSON body as `model`: 415 if not JSON, 400 if malformed, 422 naming the field if invalid."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", f"content-type: got {content_type!r}, allowed: application/json")
    body = await read_body(request, limit)
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    try:
        return msgspec.convert(data, model)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid_body", _describe(str(exc), data)) from None


def _describe(message: str, data: Any) -> str:
    """msgspec's "Expected `int` >= 1 - at `$.items[0].quantity`" as "items[0].quantity: expected `int` >= 1, got 0"."""
    match = _PATH.search(message)
    path, rule = (match.group(1).lstrip("."), message[: match.start()]) if match else ("", message)
    rule = rule[0].lower() + rule[1:]
    where = path or "request body"
    if rule.startswith("object contains unknown field"):
        return f"{where}: {rule}, not allowed"
    rule = rule.split(", got `")[0]  # the value itself is shown instead of its type
    rule = rule.replace(f"matching regex {NO_NUL!r}", "without U+0000 (NUL)")
    return f"{where}: {rule}, got {_show(_at(data, path))}"


def _at(data: Any, path: str) -> Any:
    for part in re.findall(r"[^.\[\]]+", path):
        try:
            data = data[int(part)] if isinstance(data, list) else data[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return None
    return data


def _show(value: Any) -> str:
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    if isinstance(value, dict):
        return "an object"
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 80 else text[:80] + "..."


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high], or 400 naming it, the value and the range."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = _integer(raw)
    if value is None or not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name}: got {raw!r}, allowed: an integer from {low} to {high}")
    return value


def path_id(request: Request, name: str = "id") -> int:
    """A positive 64-bit id from the URL path, or 400 naming it."""
    raw = request.path_params[name]
    value = _integer(raw)
    if value is None or not 1 <= value <= MAX_ID:
        raise ApiError(400, "invalid_parameter", f"{name}: got {raw!r}, allowed: an integer from 1 to {MAX_ID}")
    return value


def _integer(raw: str) -> int | None:
    """`raw` as an integer if it is ASCII digits only: int() would also read '1_0', ' 1', '+1' and Arabic-Indic
    digits, and str.isdigit() passes a superscript two, which int() then refuses."""
    return int(raw) if raw.isascii() and raw.isdigit() else None


def query_fields(request: Request, allowed: tuple[str, ...]) -> tuple[str, ...] | None:
    """The `fields` selection (comma-separated), or None for all fields; 400 names any unknown field."""
    if not request.scope["query_string"]:
        return None
    raw = request.query_params.get("fields")
    if raw is None:
        return None
    fields = tuple(dict.fromkeys(f.strip() for f in raw.split(",") if f.strip()))
    unknown = [f for f in fields if f not in allowed]
    if unknown or not fields:
        raise ApiError(
            400, "invalid_parameter", f"fields: got {raw!r}, allowed: a comma-separated subset of {', '.join(allowed)}"
        )
    return fields
