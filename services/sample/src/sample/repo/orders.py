"""Orders: placed in one transaction that locks and decrements stock; read with their items batch-loaded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from sample.db import Database, Transaction
from sample.errors import ApiError
from sample.models import Order, OrderItem, OrderItemIn

COLUMNS = "id, user_id, status, total_cents, created_at"
LOCK_PRODUCTS = "SELECT id, price_cents, stock FROM products WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"
DECREMENT_STOCK = (
    "UPDATE products p SET stock = p.stock - q.quantity, version = p.version + 1, updated_at = now()"
    " FROM unnest($1::bigint[], $2::int[]) AS q(id, quantity) WHERE p.id = q.id AND p.stock >= q.quantity"
    " RETURNING p.id"
)
RESTORE_STOCK = (
    "UPDATE products p SET stock = p.stock + q.quantity, version = p.version + 1, updated_at = now()"
    " FROM unnest($1::bigint[], $2::int[]) AS q(id, quantity) WHERE p.id = q.id"
)
GET_ONE = f"SELECT {COLUMNS} FROM orders WHERE id = $1"
PAGE_FOR_USER = f"SELECT {COLUMNS} FROM orders WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3"
ITEMS_OF_ORDERS = (
    "SELECT i.order_id, i.product_id, i.quantity, i.price_cents, p.name AS product_name"
    " FROM order_items i JOIN products p ON p.id = i.product_id"
    " WHERE i.order_id = ANY($1::bigint[]) ORDER BY i.order_id, i.product_id"
)


@dataclass(frozen=True)
class Reservation:
    """Stock taken for an order: product ids (sorted), quantities and unit prices, in the same order."""

    ids: list[int]
    quantities: list[int]
    prices: list[int]

    @property
    def total(self) -> int:
        return sum(q * p for q, p in zip(self.quantities, self.prices, strict=True))


async def place(
    tx: Transaction, user_id: int, items: list[OrderItemIn], catalog: Mapping[int, Mapping[str, int]] | None = None
) -> asyncpg.Record:
    """Insert the order and its items at current prices; 404/409 when a product is missing or short."""
    return await insert(tx, user_id, await reserve(tx, items, catalog))


async def reserve(
    tx: Transaction, items: list[OrderItemIn], catalog: Mapping[int, Mapping[str, int]] | None = None
) -> Reservation:
    """Decrement stock for `items` at current prices; 404/409 when a product is missing or short.

    `catalog` (id -> price_cents, stock) is what the catalog service answered (ROLE=orders); without it
    the products are read and locked here. Either way the stock decrement itself refuses to go negative.
    """
    quantities: dict[int, int] = {}
    for item in items:
        quantities[item.product_id] = quantities.get(item.product_id, 0) + item.quantity
    ids = sorted(quantities)  # lock in id order: concurrent orders cannot deadlock
    found = catalog if catalog is not None else {row["id"]: row for row in await tx.fetch(LOCK_PRODUCTS, ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ApiError(404, "product_not_found", f"items: product_id {missing[0]} does not exist")
    for product_id in ids:
        if found[product_id]["stock"] < quantities[product_id]:
            stock = found[product_id]["stock"]
            raise ApiError(
                409,
                "insufficient_stock",
                f"items: product_id {product_id} quantity {quantities[product_id]}, only {stock} in stock",
            )
    decremented = {row["id"] for row in await tx.fetch(DECREMENT_STOCK, ids, [quantities[i] for i in ids])}
    if short := [i for i in ids if i not in decremented]:  # sold meanwhile (only when `catalog` was given)
        raise ApiError(
            409, "insufficient_stock", f"items: product_id {short[0]} quantity {quantities[short[0]]}, not in stock"
        )
    return Reservation(ids, [quantities[i] for i in ids], [found[i]["price_cents"] for i in ids])


async def release(tx: Transaction, reservation: Reservation) -> None:
    """Give back the stock of an order that could not be stored."""
    await tx.fetch(RESTORE_STOCK, reservation.ids, reservation.quantities)


async def insert(
    tx: Transaction, user_id: int, reservation: Reservation, order_id: int | None = None
) -> asyncpg.Record:
    """Insert the order (with `order_id`, else the next identity) and its items."""
    order = await tx.fetchrow(
        "INSERT INTO orders (id, user_id, total_cents)"
        f" VALUES (coalesce($3, nextval(pg_get_serial_sequence('orders', 'id'))), $1, $2) RETURNING {COLUMNS}",
        user_id,
        reservation.total,
        order_id,
    )
    assert order is not None
    await tx.fetch(
        "INSERT INTO order_items (order_id, product_id, quantity, price_cents)"
        " SELECT $1, q.id, q.quantity, q.price"
        " FROM unnest($2::bigint[], $3::int[], $4::int[]) AS q(id, quantity, price)",
        order["id"],
        reservation.ids,
        reservation.quantities,
        reservation.prices,
    )
    return order


async def get(db: Database, order_id: int, fresh: bool) -> asyncpg.Record | None:
    return await db.fetchrow(GET_ONE, order_id, fresh=fresh)


async def page_for_user(db: Database, user_id: int, after_id: int, limit: int, fresh: bool) -> list[asyncpg.Record]:
    return await db.fetch(PAGE_FOR_USER, user_id, after_id, limit, fresh=fresh)


async def with_items(db: Database, orders: list[asyncpg.Record], fresh: bool) -> list[Order]:
    """Attach items to many orders with ONE query (no N+1), product names joined in."""
    if not orders:
        return []
    rows = await db.fetch(ITEMS_OF_ORDERS, [o["id"] for o in orders], fresh=fresh)
    items: dict[int, list[OrderItem]] = {o["id"]: [] for o in orders}
    for row in rows:
        items[row["order_id"]].append(
            OrderItem(row["product_id"], row["quantity"], row["price_cents"], row["product_name"])
        )
    return [Order(items=items[o["id"]], **dict(o)) for o in orders]
