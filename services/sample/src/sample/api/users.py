"""Users and sessions: sign up, log in (session cookie), log out, who am I, a user's orders."""

from __future__ import annotations

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from sample import consistency, cursor, remote
from sample.errors import ApiError
from sample.models import Login, UserCreate
from sample.repo import orders, sharded, users
from sample.responses import PRIVATE, encode, json_response
from sample.routing import PathRoute
from sample.services import Services, of
from sample.validation import parse_body, path_id, query_int


def require_sessions(svc: Services) -> None:
    if svc.sessions is None:
        raise ApiError(404, "sessions_disabled", "sessions: off in this deployment (SESSIONS_ENABLED=false)")


async def current_user_id(svc: Services, request: Request) -> int:
    """The logged-in user's id, or 401."""
    require_sessions(svc)
    assert svc.sessions is not None
    user_id = await svc.sessions.user_id(request)
    if user_id is None:
        raise ApiError(401, "not_logged_in", "session: no valid session cookie, log in with POST /sessions")
    return user_id


async def create_user(request: Request) -> Response:
    svc = of(request)
    new = await parse_body(request, UserCreate, svc.settings.max_body_bytes)
    if svc.shards is not None:
        row = await sharded.create_user(svc.shards, new)
    else:
        async with svc.db.transaction() as tx:
            row = await users.create(tx, new)
    if row is None:
        raise ApiError(409, "conflict", f"email: {new.email!r} is already registered")
    response = json_response(request, encode(users.to_user(row)), status=201)
    response.headers["location"] = f"/users/{row['id']}"
    consistency.mark_written(response, svc.settings.read_your_writes_seconds, svc.settings.cookie_secure)
    return response


async def get_user(request: Request) -> Response:
    svc = of(request)
    user_id = path_id(request)
    row = await _user(svc, user_id, consistency.wants_fresh(request))
    if row is None:
        raise ApiError(404, "not_found", f"id: user {user_id} does not exist")
    return json_response(request, encode(users.to_user(row)), cache_control=PRIVATE)


async def _user(svc: Services, user_id: int, fresh: bool) -> asyncpg.Record | None:
    """The user's row, from its shard group when sharded."""
    if svc.shards is not None:
        return await sharded.get_user(svc.shards, user_id, fresh)
    return await users.get(svc.db, user_id, fresh)


async def login(request: Request) -> Response:
    svc = of(request)
    require_sessions(svc)
    assert svc.sessions is not None
    credentials = await parse_body(request, Login, svc.settings.max_body_bytes)
    if svc.shards is not None:
        row = await sharded.credentials(svc.shards, credentials.email)
    else:
        row = await users.credentials(svc.db, credentials.email)
    if row is None or not await users.verify_password(credentials.password, row["password_hash"]):
        raise ApiError(401, "bad_credentials", "email or password: no user with this email and password")
    response = json_response(request, encode({"user_id": row["id"]}), status=201)
    await svc.sessions.create(row["id"], response)
    return response


async def logout(request: Request) -> Response:
    svc = of(request)
    require_sessions(svc)
    assert svc.sessions is not None
    response = Response(status_code=204)
    await svc.sessions.delete(request, response)
    return response


async def me(request: Request) -> Response:
    svc = of(request)
    user_id = await current_user_id(svc, request)
    row = await _user(svc, user_id, consistency.wants_fresh(request))
    if row is None:
        raise ApiError(401, "not_logged_in", f"session: user {user_id} no longer exists")
    return json_response(request, encode(users.to_user(row)), cache_control=PRIVATE)


async def user_orders(request: Request) -> Response:
    """A user's orders: from the orders role when ORDERS_URL is set, else read here."""
    svc = of(request)
    user_id = path_id(request)
    if svc.orders is None:
        return await orders_page(request, user_id)
    reply = await remote.user_orders(svc.orders, user_id, request.url.query, request.headers.get("cookie"))
    content_type = reply.headers.get("content-type", "application/json")
    cache_control = reply.headers.get("cache-control", PRIVATE)
    return Response(reply.body, reply.status, headers={"content-type": content_type, "cache-control": cache_control})


async def orders_page(request: Request, user_id: int) -> Response:
    """A user's orders, oldest first, keyset-paginated, items loaded for the whole page in one query."""
    svc = of(request)
    limit = query_int(request, "limit", 20, 1, 100)  # a bad parameter is a 400 naming it, whoever asks
    raw_cursor = request.query_params.get("cursor")
    after = cursor.decode("orders", raw_cursor) if raw_cursor is not None else 0
    if svc.sessions is not None and await current_user_id(svc, request) != user_id:
        raise ApiError(403, "forbidden", f"id: user {user_id} is not the logged-in user")
    fresh = consistency.wants_fresh(request)
    if svc.shards is not None:
        rows = await sharded.page_for_user(svc.shards, user_id, after, limit, fresh)
        page = await sharded.with_items(svc.shards, rows, fresh)
    else:
        rows = await orders.page_for_user(svc.db, user_id, after, limit, fresh)
        page = await orders.with_items(svc.db, rows, fresh)
    next_cursor = cursor.encode("orders", rows[-1]["id"]) if len(rows) == limit else None
    return json_response(request, encode({"items": page, "next_cursor": next_cursor}), cache_control=PRIVATE)


ROUTES = [
    PathRoute("/users", post=create_user),
    PathRoute("/users/{id}", get=get_user),
    PathRoute("/users/{id}/orders", get=user_orders),
    PathRoute("/sessions", post=login, delete=logout),
    PathRoute("/me", get=me),
]
