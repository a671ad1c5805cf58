"""Opaque cursors for keyset pagination: base64url of "<kind>:<last id>", never an OFFSET."""

from __future__ import annotations

import base64
import binascii

from sample.errors import ApiError

MAX_ID = 2**63 - 1


def encode(kind: str, last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{last_id}".encode()).decode().rstrip("=")


def decode(kind: str, cursor: str) -> int:
    """The last id a page ended at; a 400 naming the cursor when it is not one this API issued for `kind`."""
    shown = cursor if len(cursor) <= 64 else cursor[:64] + "..."
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        last_id = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(
            400, "invalid_cursor", f"cursor: got {shown!r}, allowed: a cursor from a previous page's next_cursor"
        ) from None
    if prefix != kind:
        raise ApiError(
            400, "invalid_cursor", f"cursor: got a {prefix!r} cursor, allowed: a {kind!r} cursor from this list"
        )
    if not 0 <= last_id <= MAX_ID:
        raise ApiError(400, "invalid_cursor", f"cursor: position {last_id} out of range, allowed: 0 to {MAX_ID}")
    return last_id
