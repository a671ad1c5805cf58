"""Realtime topics a client subscribes to: `products` (every product change), `product:<id>` (one product's
changes) and `orders` (the logged-in user's own orders, never another user's)."""

from __future__ import annotations

import re
from typing import Any

from sample.cursor import MAX_ID

MAX_TOPICS = 100
ALLOWED = f"products, product:<id> (id 1 to {MAX_ID}) or orders, at most {MAX_TOPICS}"
_PRODUCT = re.compile(r"product:([1-9][0-9]{0,18})")


def parse(topic: object) -> str:
    """`topic` when it is one of the allowed topics, else ValueError."""
    if not isinstance(topic, str):
        raise ValueError(topic)
    if topic in ("products", "orders"):
        return topic
    match = _PRODUCT.fullmatch(topic)
    if match is None or int(match.group(1)) > MAX_ID:
        raise ValueError(topic)
    return topic


def matches(topics: set[str], user_id: int, event_type: str, data: dict[str, Any]) -> bool:
    """True when an event of `event_type` with `data` belongs to one of `topics` for user `user_id`."""
    if event_type.startswith("product."):
        return "products" in topics or f"product:{data.get('id')}" in topics
    if event_type.startswith("order."):
        return "orders" in topics and data.get("user_id") == user_id
    return False
