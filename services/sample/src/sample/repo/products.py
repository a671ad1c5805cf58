"""Products: get, batch get and keyset pages (replica-readable), create and update (primary)."""

from __future__ import annotations

from typing import Any

import asyncpg

from sample.coalesce import Coalescer
from sample.db import Database, Transaction
from sample.models import Product, ProductCreate
from sample.responses import encode

COLUMNS = "id, sku, name, description, price_cents, stock, version, updated_at"
IMAGES = 4  # packaged images under /static/img/
GET_MANY = f"SELECT {COLUMNS} FROM products WHERE id = ANY($1::bigint[])"
PAGE = f"SELECT {COLUMNS} FROM products WHERE id > $1 ORDER BY id LIMIT $2"


def to_product(row: asyncpg.Record) -> Product:
    return Product(image_url=f"/static/img/product-{row['id'] % IMAGES}.svg", **dict(row))


def encode_row(row: asyncpg.Record) -> bytes:
    return encode(to_product(row))


class ProductReader:
    """Reads of single products as encoded JSON, coalesced: the ids requested in one event-loop turn
    are loaded with one GET_MANY query per target (primary for fresh reads, else the replicas)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._fresh: Coalescer[int, bytes] = Coalescer(lambda ids: self._load(ids, fresh=True))
        self._any: Coalescer[int, bytes] = Coalescer(lambda ids: self._load(ids, fresh=False))

    async def _load(self, ids: list[int], fresh: bool) -> dict[int, bytes]:
        return {row["id"]: encode_row(row) for row in await get_many(self.db, ids, fresh)}

    async def one(self, product_id: int, fresh: bool) -> bytes | None:
        return await (self._fresh if fresh else self._any).get(product_id)


async def get_many(db: Database, ids: list[int], fresh: bool) -> list[asyncpg.Record]:
    return await db.fetch(GET_MANY, ids, fresh=fresh)


async def page(db: Database, after_id: int, limit: int, fresh: bool) -> list[asyncpg.Record]:
    return await db.fetch(PAGE, after_id, limit, fresh=fresh)


async def create(tx: Transaction, new: ProductCreate) -> asyncpg.Record | None:
    """The inserted row, or None when the SKU is taken."""
    return await tx.fetchrow(
        f"INSERT INTO products (sku, name, description, price_cents, stock) VALUES ($1, $2, $3, $4, $5)"
        f" ON CONFLICT (sku) DO NOTHING RETURNING {COLUMNS}",
        new.sku,
        new.name,
        new.description,
        new.price_cents,
        new.stock,
    )


async def update(tx: Transaction, product_id: int, changes: dict[str, Any]) -> asyncpg.Record | None:
    """Apply `changes` (column -> value, names from ProductUpdate only) and bump the version."""
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
    return await tx.fetchrow(
        f"UPDATE products SET {assignments}, version = version + 1, updated_at = now()"
        f" WHERE id = $1 RETURNING {COLUMNS}",
        product_id,
        *changes.values(),
    )
