"""Request bodies, validated strictly (unknown fields rejected, no type coercion), and response shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from sample.cursor import MAX_ID

Id = Annotated[int, Meta(ge=1, le=MAX_ID)]
Cents = Annotated[int, Meta(ge=0, le=1_000_000_000)]
Stock = Annotated[int, Meta(ge=0, le=1_000_000_000)]
# Python's `$` also matches before a final newline (JSON Schema's does not): `$(?!\n)` ends both at the end
Sku = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$(?!\n)")]
NO_NUL = r"^[^\x00]*$"  # Postgres text cannot hold U+0000: a 422 naming the field, not a 500 from the driver
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, Meta(max_length=4000, pattern=NO_NUL)]
Email = Annotated[str, Meta(min_length=3, max_length=254, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$(?!\n)")]
Password = Annotated[str, Meta(min_length=8, max_length=128)]
MAX_BATCH = 100
MAX_ORDER_ITEMS = 50


class Strict(Struct, forbid_unknown_fields=True):
    pass


class ProductCreate(Strict):
    sku: Sku
    name: Name
    price_cents: Cents
    stock: Stock = 0
    description: Description = ""


class ProductUpdate(Strict):
    name: Name | UnsetType = UNSET
    price_cents: Cents | UnsetType = UNSET
    stock: Stock | UnsetType = UNSET
    description: Description | UnsetType = UNSET


class BatchGet(Strict):
    ids: Annotated[list[Id], Meta(min_length=1, max_length=MAX_BATCH)]


class UserCreate(Strict):
    email: Email
    name: Name
    password: Password


class Login(Strict):
    email: Email
    password: Annotated[str, Meta(min_length=1, max_length=128)]


class OrderItemIn(Strict):
    product_id: Id
    quantity: Annotated[int, Meta(ge=1, le=1000)]


class OrderCreate(Strict):
    items: Annotated[list[OrderItemIn], Meta(min_length=1, max_length=MAX_ORDER_ITEMS)]
    user_id: Id | UnsetType = UNSET


class Product(Struct):
    id: int
    sku: str
    name: str
    description: str
    price_cents: int
    stock: int
    image_url: str
    version: int
    updated_at: datetime


class User(Struct):
    id: int
    email: str
    name: str
    created_at: datetime


class OrderItem(Struct):
    product_id: int
    quantity: int
    price_cents: int
    product_name: str


class Order(Struct):
    id: int
    user_id: int
    status: str
    total_cents: int
    created_at: datetime
    items: list[OrderItem]


PRODUCT_FIELDS = tuple(Product.__struct_fields__)
SCHEMAS = (ProductCreate, ProductUpdate, BatchGet, UserCreate, Login, OrderCreate, Product, User, Order)


def schema_components() -> dict[str, object]:
    """JSON Schema of every body and response type, for the OpenAPI document."""
    _, components = msgspec.json.schema_components(SCHEMAS, ref_template="#/components/schemas/{name}")
    components["ProductUpdate"]["minProperties"] = 1  # update_product refuses a body that changes nothing
    return components
