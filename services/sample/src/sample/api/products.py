"""Catalog endpoints: cache-aside reads, keyset pages, field selection, batch get, create and update."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from sample import consistency, cursor
from sample.errors import ApiError
from sample.models import PRODUCT_FIELDS, BatchGet, ProductCreate, ProductUpdate
from sample.repo import products
from sample.responses import encode, json_response, public
from sample.routing import PathRoute
from sample.services import Services, of
from sample.validation import parse_body, path_id, query_fields, query_int

_decode = msgspec.json.Decoder().decode


def cache_key(product_id: int) -> str:
    """The product's cache key; v2: the value starts with a refresh time (cacheentry)."""
    return f"product:v2:{product_id}"


def _select(body: bytes, fields: tuple[str, ...] | None) -> dict[str, object] | bytes:
    if fields is None:
        return body
    product = _decode(body)
    return {f: product[f] for f in fields}


async def _load_one(svc: Services, product_id: int, fresh: bool) -> bytes | None:
    """Encoded product: from the cache unless the client just wrote (then straight from the primary).

    Cache fills read the primary: a lagging replica must never put an old row back after invalidation.
    """
    if svc.cache is None or fresh:
        return await svc.products.one(product_id, fresh)
    return await svc.cache.get_or_load(cache_key(product_id), lambda: svc.products.one(product_id, fresh=True))


async def get_product(request: Request) -> Response:
    svc = of(request)
    product_id = path_id(request)
    fields = query_fields(request, PRODUCT_FIELDS)
    body = await _load_one(svc, product_id, consistency.wants_fresh(request))
    if body is None:
        raise ApiError(404, "not_found", f"id: product {product_id} does not exist")
    selected = _select(body, fields)
    payload = selected if isinstance(selected, bytes) else encode(selected)
    return json_response(request, payload, cache_control=public(svc.settings.http_cache_max_age_seconds))


async def list_products(request: Request) -> Response:
    svc = of(request)
    limit = query_int(request, "limit", 20, 1, 100)
    fields = query_fields(request, PRODUCT_FIELDS)
    raw_cursor = request.query_params.get("cursor")
    after = cursor.decode("products", raw_cursor) if raw_cursor is not None else 0
    rows = await products.page(svc.db, after, limit, consistency.wants_fresh(request))
    items = [msgspec.structs.asdict(products.to_product(row)) for row in rows]
    if fields is not None:
        items = [{f: item[f] for f in fields} for item in items]
    next_cursor = cursor.encode("products", rows[-1]["id"]) if len(rows) == limit else None
    body = encode({"items": items, "next_cursor": next_cursor})
    return json_response(request, body, cache_control=public(svc.settings.http_cache_max_age_seconds))


async def batch_get(request: Request) -> Response:
    """Up to MAX_BATCH products in request order with one cache MGET and at most one SQL query."""
    svc = of(request)
    batch = await parse_body(request, BatchGet, svc.settings.max_body_bytes)
    fields = query_fields(request, PRODUCT_FIELDS)
    ids = list(dict.fromkeys(batch.ids))
    fresh = consistency.wants_fresh(request)

    async def load(missing: list[int]) -> dict[int, bytes]:
        rows = await products.get_many(svc.db, missing, fresh=fresh or svc.cache is not None)
        return {row["id"]: products.encode_row(row) for row in rows}

    if svc.cache is None or fresh:
        found = await load(ids)
    else:
        found = await svc.cache.get_many({i: cache_key(i) for i in ids}, load)
    items = [msgspec.Raw(b) if fields is None else _select(b, fields) for i in ids if (b := found.get(i))]
    body = encode({"items": items, "missing": [i for i in ids if i not in found]})
    return json_response(request, body)


async def create_product(request: Request) -> Response:
    svc = of(request)
    new = await parse_body(request, ProductCreate, svc.settings.max_body_bytes)
    async with svc.db.transaction() as tx:
        row = await products.create(tx, new)
    if row is None:
        raise ApiError(409, "conflict", f"sku: {new.sku!r} already exists")
    return await _written(svc, request, row, "product.created", 201)


async def update_product(request: Request) -> Response:
    svc = of(request)
    product_id = path_id(request)
    changes = msgspec.structs.asdict(await parse_body(request, ProductUpdate, svc.settings.max_body_bytes))
    changes = {k: v for k, v in changes.items() if v is not msgspec.UNSET}
    if not changes:
        raise ApiError(
            422,
            "invalid_body",
            f"request body: no field to change, allowed: {', '.join(ProductUpdate.__struct_fields__)}",
        )
    async with svc.db.transaction() as tx:
        row = await products.update(tx, product_id, changes)
    if row is None:
        raise ApiError(404, "not_found", f"id: product {product_id} does not exist")
    return await _written(svc, request, row, "product.updated", 200)


async def _written(svc: Services, request: Request, row: object, event: str, status: int) -> Response:
    """After a committed write: invalidate, publish, answer with the new row and the read-your-writes mark."""
    product = products.to_product(row)  # type: ignore[arg-type]
    if svc.cache is not None:
        await svc.cache.invalidate([cache_key(product.id)])
    if svc.events is not None:
        await svc.events.publish(event, {"id": product.id, "version": product.version})
    response = json_response(request, encode(product), status=status)
    if status == 201:
        response.headers["location"] = f"/products/{product.id}"
    consistency.mark_written(response, svc.settings.read_your_writes_seconds, svc.settings.cookie_secure)
    return response


ROUTES = [  # /products/batch-get before /products/{id}, which would match it too
    PathRoute("/products/batch-get", post=batch_get),
    PathRoute("/products/{id}", get=get_product, patch=update_product),
    PathRoute("/products", get=list_products, post=create_product),
]
