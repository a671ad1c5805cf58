"""Users and their orders when they live in shard groups (SHARD_GROUPS set).

Ids come from the main group's sequences (`user_ids`, `order_ids`); a user's row and orders live in
the group owning the user's logical shard; emails (login, uniqueness) and products stay in the main
group. Every write goes through `Shards.write` (the move fence).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import asyncpg

from sample.db import Database, Transaction
from sample.models import Order, OrderItem, OrderItemIn, UserCreate
from sample.repo import orders, users
from sample.shards import Shards, merge_newest_first, order_id, order_logical_shard

CLAIM_EMAIL = (
    "INSERT INTO user_directory (email_lower, user_id) VALUES (lower($1), nextval('user_ids'))"
    " ON CONFLICT DO NOTHING RETURNING user_id"
)
INSERT_USER = f"INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4) RETURNING {users.COLUMNS}"
USER_OF_EMAIL = "SELECT user_id FROM user_directory WHERE email_lower = lower($1)"
CREDENTIALS = "SELECT id, password_hash FROM users WHERE id = $1"
NEWEST_BELOW = f"SELECT {orders.COLUMNS} FROM orders WHERE id < $1 ORDER BY id DESC LIMIT $2"
ITEMS_OF_ORDERS = (
    "SELECT order_id, product_id, quantity, price_cents FROM order_items"
    " WHERE order_id = ANY($1::bigint[]) ORDER BY order_id, product_id"
)
PRODUCT_NAMES = "SELECT id, name FROM products WHERE id = ANY($1::bigint[])"


async def create_user(shards: Shards, new: UserCreate) -> asyncpg.Record | None:
    """Claim the email and an id in the main group, then insert the user in its group; None when the email is taken."""
    password_hash = await users.hash_password(new.password)
    async with shards.main.transaction() as tx:
        claimed = await tx.fetchrow(CLAIM_EMAIL, new.email)
    if claimed is None:
        return None
    user_id = claimed["user_id"]

    async def insert(tx: Transaction) -> asyncpg.Record | None:
        return await tx.fetchrow(INSERT_USER, user_id, new.email, new.name, password_hash)

    try:
        return await shards.write(shards.logical_of_user(user_id), insert)
    except BaseException:
        async with shards.main.transaction() as tx:
            await tx.fetch("DELETE FROM user_directory WHERE user_id = $1", user_id)
        raise


async def get_user(shards: Shards, user_id: int, fresh: bool) -> asyncpg.Record | None:
    return await shards.db_of(shards.logical_of_user(user_id)).fetchrow(users.GET_ONE, user_id, fresh=fresh)


async def credentials(shards: Shards, email: str) -> asyncpg.Record | None:
    """id and password hash for a login: the email's user id from the main group, the hash from its group."""
    found = await shards.main.fetchrow(USER_OF_EMAIL, email, fresh=True)
    if found is None:
        return None
    user_id = found["user_id"]
    return await shards.db_of(shards.logical_of_user(user_id)).fetchrow(CREDENTIALS, user_id, fresh=True)


async def place_order(
    shards: Shards, user_id: int, items: list[OrderItemIn], catalog: Mapping[int, Mapping[str, int]] | None
) -> asyncpg.Record:
    """Take the stock and an order id in the main group, store the order in the user's group; give the
    stock back when that fails (no such user: ForeignKeyViolationError; shard moving: 503)."""
    logical = shards.logical_of_user(user_id)
    async with shards.main.transaction() as tx:
        reservation = await orders.reserve(tx, items, catalog)
        sequence = await tx.fetchrow("SELECT nextval('order_ids') AS n")
    assert sequence is not None
    new_id = order_id(sequence["n"], logical)

    async def insert(tx: Transaction) -> asyncpg.Record:
        return await orders.insert(tx, user_id, reservation, new_id)

    try:
        return await shards.write(logical, insert)
    except BaseException:
        async with shards.main.transaction() as tx:
            await orders.release(tx, reservation)
        raise


def _order_db(shards: Shards, order: int) -> Database | None:
    logical = order_logical_shard(order)
    return shards.db_of(logical) if logical < shards.map.logical_shards else None


async def get_order(shards: Shards, order: int, fresh: bool) -> asyncpg.Record | None:
    db = _order_db(shards, order)
    return None if db is None else await db.fetchrow(orders.GET_ONE, order, fresh=fresh)


async def page_for_user(shards: Shards, user_id: int, after_id: int, limit: int, fresh: bool) -> list[asyncpg.Record]:
    db = shards.db_of(shards.logical_of_user(user_id))
    return await db.fetch(orders.PAGE_FOR_USER, user_id, after_id, limit, fresh=fresh)


async def newest_orders(shards: Shards, before_id: int, limit: int) -> list[asyncpg.Record]:
    """Every group's orders, newest (highest id) first, below `before_id`: fan-out and k-way merge."""
    pages = await shards.fan_out(lambda db: db.fetch(NEWEST_BELOW, before_id, limit))
    return merge_newest_first(pages, limit)


async def with_items(shards: Shards, rows: list[asyncpg.Record], fresh: bool) -> list[Order]:
    """Items from each order's group (one query per group), product names from the main group (one query)."""
    by_db: dict[int, tuple[Database, list[int]]] = {}
    for row in rows:
        db = _order_db(shards, row["id"])
        assert db is not None
        by_db.setdefault(id(db), (db, []))[1].append(row["id"])
    item_rows = [item for db, ids in by_db.values() for item in await db.fetch(ITEMS_OF_ORDERS, ids, fresh=fresh)]
    product_ids = sorted({item["product_id"] for item in item_rows})
    names = {p["id"]: p["name"] for p in await shards.main.fetch(PRODUCT_NAMES, product_ids)} if product_ids else {}
    items: dict[int, list[OrderItem]] = defaultdict(list)
    for item in item_rows:
        name = names.get(item["product_id"], "")
        items[item["order_id"]].append(OrderItem(item["product_id"], item["quantity"], item["price_cents"], name))
    return [Order(items=items[row["id"]], **dict(row)) for row in rows]
