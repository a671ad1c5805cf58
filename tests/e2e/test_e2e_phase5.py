"""Phase 5 on kind: the edge cache answers a repeated request for a cacheable path from cache.

The edge cache runs several replicas, each with its own cache, and the gateway balances between
them: the first request each replica sees is a miss, so a hit is due within replicas + 1 requests.
"""

from __future__ import annotations

from typing import Any

import pytest

from components.local import guide

pytestmark = pytest.mark.e2e
PHASE = 5
HOST = guide.hostname(PHASE)


def test_a_repeated_request_is_an_edge_cache_hit(kit: Any, deployed: str) -> None:
    replicas = kit.json("get", "deployment", "edge-cache", "-n", deployed)["spec"]["replicas"]
    seen = []
    for _ in range(replicas + 1):
        status, headers, _ = kit.get(HOST, "/products")
        assert status == 200
        seen.append({key.lower(): value for key, value in headers.items()})
    hits = [h for h in seen if h.get("x-cache", "").startswith("HIT")]
    assert hits, [h.get("x-cache") for h in seen]
    assert int(hits[0].get("x-cache-hits", "0")) >= 1
    assert "age" in hits[0]
