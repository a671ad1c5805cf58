"""Phase 5 on kind: the edge cache answers the second request for a cacheable path from cache."""

from __future__ import annotations

from typing import Any

import pytest

from components.local import guide

pytestmark = pytest.mark.e2e
PHASE = 5
HOST = guide.hostname(PHASE)


def test_second_request_is_an_edge_cache_hit(kit: Any, deployed: str) -> None:
    first_status = kit.get(HOST, "/products")[0]
    second_status, second, _ = kit.get(HOST, "/products")
    assert (first_status, second_status) == (200, 200)
    headers = {key.lower(): value for key, value in second.items()}
    assert headers.get("x-cache", "").startswith("HIT"), second
    assert int(headers.get("x-cache-hits", "0")) >= 1
    assert "age" in headers
