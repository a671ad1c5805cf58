"""How a product is stored in the Redis cache: an 8-byte big-endian refresh time (ms since the epoch)
followed by the encoded JSON, so that the one GET that serves a read also says whether the entry is due
for refresh-ahead. b"" (no header) marks a row that does not exist.

The format is versioned by the key (`product:v2:{id}`): pods of an older release, during a rolling
update, keep reading their own keys and never see a header.
"""

from __future__ import annotations

import struct
import time

HEADER = struct.Struct(">Q")
MISSING = b""


def pack(body: bytes, refresh_at_ms: int) -> bytes:
    return HEADER.pack(refresh_at_ms) + body


def refresh_at_ms(value: bytes) -> int:
    """When a read of this (non-MISSING) value should start a background refresh."""
    return HEADER.unpack_from(value)[0]


def restamp(value: bytes, refresh_at_ms: int) -> bytes:
    """The same (non-MISSING) entry with another refresh time."""
    return HEADER.pack(refresh_at_ms) + value[HEADER.size :]


def body(value: bytes) -> bytes | None:
    """The encoded row, or None for MISSING."""
    return value[HEADER.size :] if value else None


def now_ms() -> int:
    """Wall-clock ms: refresh times are compared across processes and pods, so not a monotonic clock."""
    return time.time_ns() // 1_000_000
