"""Orders: place (stock checked and decremented atomically) and read with items."""

from __future__ import annotations

import hmac

import asyncpg
from msgspec import UNSET
from starlette.requests import Request
from starlette.responses import Response

from sample import consistency, cursor, remote
from sample.api.products import cache_key
from sample.api.users import current_user_id, orders_page
from sample.cursor import MAX_ID
from sample.errors import ApiError
from sample.models import Order, OrderCreate
from sample.repo import orders, sharded
from sample.responses import PRIVATE, encode, json_response
from sample.routing import PathRoute
from sample.services import Services, of
from sample.shards import Shards
from sample.validation import parse_body, path_id, query_int


async def _buyer(svc: Services, request: Request, new: OrderCreate) -> int:
    """With sessions on, the logged-in user buys; without, the body names the user."""
    if svc.sessions is not None:
        if new.user_id is not UNSET:
            raise ApiError(422, "invalid_body", "user_id: not allowed with sessions on; the logged-in user orders")
        return await current_user_id(svc, request)
    if new.user_id is UNSET:
        raise ApiError(422, "invalid_body", "user_id: required while sessions are off (SESSIONS_ENABLED=false)")
    return new.user_id


async def place_order(request: Request) -> Response:
    svc = of(request)
    new = await parse_body(request, OrderCreate, svc.settings.max_body_bytes)
    user_id = await _buyer(svc, request, new)
    ids = sorted({item.product_id for item in new.items})
    catalog = await remote.products(svc.catalog, ids) if svc.catalog is not None else None
    try:
        if svc.shards is not None:
            row = await sharded.place_order(svc.shards, user_id, new.items, catalog)
        else:
            async with svc.db.transaction() as tx:
                row = await orders.place(tx, user_id, new.items, catalog)
    except asyncpg.ForeignKeyViolationError:
        raise ApiError(404, "user_not_found", f"user_id: user {user_id} does not exist") from None
    finally:  # placed, or (sharded) the stock taken in the main group and given back: the rows changed either way
        if svc.cache is not None:
            await svc.cache.invalidate([cache_key(i) for i in ids])
    [order] = await _with_items(svc, [row], fresh=True)
    product_ids = [item.product_id for item in order.items]
    if svc.events is not None:
        await svc.events.publish("order.created", {"id": order.id, "user_id": user_id, "product_ids": product_ids})
    response = json_response(request, encode(order), status=201)
    response.headers["location"] = f"/orders/{order.id}"
    consistency.mark_written(response, svc.settings.read_your_writes_seconds, svc.settings.cookie_secure)
    return response


async def get_order(request: Request) -> Response:
    svc = of(request)
    order_id = path_id(request)
    fresh = consistency.wants_fresh(request)
    if svc.shards is not None:
        row = await sharded.get_order(svc.shards, order_id, fresh)
    else:
        row = await orders.get(svc.db, order_id, fresh)
    if row is None or (svc.sessions is not None and row["user_id"] != await current_user_id(svc, request)):
        raise ApiError(404, "not_found", f"id: order {order_id} does not exist")
    [order] = await _with_items(svc, [row], fresh)
    return json_response(request, encode(order), cache_control=PRIVATE)


async def _with_items(svc: Services, rows: list[asyncpg.Record], fresh: bool) -> list[Order]:
    if svc.shards is not None:
        return await sharded.with_items(svc.shards, rows, fresh)
    return await orders.with_items(svc.db, rows, fresh)


async def all_orders(request: Request, shards: Shards) -> Response:
    """Every user's orders, newest first, from every shard group (admin: `authorization: Bearer ADMIN_TOKEN`)."""
    token = shards.config.admin_token
    given = request.headers.get("authorization", "")
    if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise ApiError(403, "forbidden", "authorization: the admin listing needs `Bearer <ADMIN_TOKEN>`")
    limit = query_int(request, "limit", 20, 1, 100)
    raw_cursor = request.query_params.get("cursor")
    before = cursor.decode("all-orders", raw_cursor) if raw_cursor is not None else MAX_ID
    rows = await sharded.newest_orders(shards, before, limit)
    page = await sharded.with_items(shards, rows, fresh=False)
    next_cursor = cursor.encode("all-orders", rows[-1]["id"]) if len(rows) == limit else None
    return json_response(request, encode({"items": page, "next_cursor": next_cursor}), cache_control=PRIVATE)


async def list_orders(request: Request) -> Response:
    """GET /orders?user_id=N: a user's orders (what the auth role's /users/{id}/orders asks for);
    without user_id, when sharded: every user's orders (admin)."""
    raw = request.query_params.get("user_id")
    svc = of(request)
    if raw is None and svc.shards is not None:
        return await all_orders(request, svc.shards)
    if raw is None:
        raise ApiError(400, "invalid_parameter", "user_id: not set, allowed: an integer from 1 to 2^63-1")
    return await orders_page(request, query_int(request, "user_id", 0, 1, MAX_ID))


ROUTES = [
    PathRoute("/orders", get=list_orders, post=place_order),
    PathRoute("/orders/{id}", get=get_order),
]
