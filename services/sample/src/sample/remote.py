"""What one role asks another for: product prices and stock from the catalog, a user's orders from orders."""

from __future__ import annotations

from typing import Any

import msgspec

from sample.errors import ApiError
from sample.upstream import Reply, Upstream

_decode = msgspec.json.Decoder().decode


def _unexpected(upstream: Upstream, reply: Reply) -> ApiError:
    return ApiError(502, "upstream_error", f"{upstream.name}: answered {reply.status}: {reply.body[:200]!r}")


async def products(catalog: Upstream, ids: list[int]) -> dict[int, dict[str, Any]]:
    """id -> {id, price_cents, stock} for the ids the catalog knows (POST /products/batch-get)."""
    reply = await catalog.call(
        "POST",
        "/products/batch-get?fields=id,price_cents,stock",
        msgspec.json.encode({"ids": ids}),
        {"content-type": "application/json"},
    )
    if reply.status != 200:
        raise _unexpected(catalog, reply)
    return {item["id"]: item for item in _decode(reply.body)["items"]}


async def user_orders(orders: Upstream, user_id: int, query: str, cookie: str | None) -> Reply:
    """GET /orders?user_id=... on the orders role, with the caller's cookies (session, read-your-writes)."""
    target = f"/orders?user_id={user_id}" + (f"&{query}" if query else "")
    reply = await orders.call("GET", target, headers={"cookie": cookie} if cookie else None)
    if reply.status != 200 and not 400 <= reply.status < 500:
        raise _unexpected(orders, reply)
    return reply
