"""The jobs a worker runs, by kind: each validates its payload and returns a small JSON result.

`order-receipt` renders the plain-text receipt of an order (items, quantities, prices, total) from
the primary database. An order that does not exist fails the job (retried, then dead-lettered).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from sample.db import Database
from sample.models import Id, Strict
from sample.repo import orders, sharded
from sample.shards import Shards


class JobFailed(Exception):
    """The job cannot succeed with this payload now; the worker retries it, then dead-letters it."""


class OrderReceipt(Strict):
    order_id: Id


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


async def order_receipt(db: Database, shards: Shards | None, job: OrderReceipt) -> dict[str, Any]:
    """The receipt, read from the order's shard group when sharded."""
    if shards is not None:
        row = await sharded.get_order(shards, job.order_id, fresh=True)
    else:
        row = await orders.get(db, job.order_id, fresh=True)
    if row is None:
        raise JobFailed(f"order_id: order {job.order_id} does not exist")
    if shards is not None:
        [order] = await sharded.with_items(shards, [row], fresh=True)
    else:
        [order] = await orders.with_items(db, [row], fresh=True)
    lines = [f"Receipt for order {order.id} (user {order.user_id}, {order.created_at:%Y-%m-%d %H:%M} UTC)"]
    for item in order.items:
        amount = _money(item.price_cents * item.quantity)
        lines.append(f"{item.quantity} x {item.product_name} @ {_money(item.price_cents)} = {amount}")
    lines.append(f"Total: {_money(order.total_cents)}")
    return {"order_id": order.id, "total_cents": order.total_cents, "receipt": "\n".join(lines)}


Handler = Callable[[Database, Shards | None, Any], Awaitable[dict[str, Any]]]
KINDS: dict[str, tuple[type[Strict], Handler]] = {"order-receipt": (OrderReceipt, order_receipt)}


async def run(db: Database, kind: str, payload: bytes, shards: Shards | None = None) -> dict[str, Any]:
    """Run one job; JobFailed when its kind or payload is unknown or it cannot be done."""
    if kind not in KINDS:
        raise JobFailed(f"kind: got {kind!r}, allowed: {', '.join(KINDS)}")
    model, handler = KINDS[kind]
    try:
        job = msgspec.json.decode(payload, type=model)
    except msgspec.DecodeError as error:
        raise JobFailed(f"payload: {error}") from None
    return await handler(db, shards, job)
