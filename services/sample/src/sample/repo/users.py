"""Users: create with a scrypt password hash, look up by id or by email (case-insensitive)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

import asyncpg

from sample.db import Database, Transaction
from sample.models import User, UserCreate

COLUMNS = "id, email, name, created_at"
GET_ONE = f"SELECT {COLUMNS} FROM users WHERE id = $1"
CREDENTIALS = "SELECT id, password_hash FROM users WHERE lower(email) = lower($1)"
# scrypt cost: ~16 MiB and a few tens of ms per hash, run off the event loop.
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)


async def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = await asyncio.to_thread(_hash, password, salt)
    return f"scrypt${salt.hex()}${digest.hex()}"


async def verify_password(password: str, stored: str) -> bool:
    _, salt, digest = stored.split("$")
    candidate = await asyncio.to_thread(_hash, password, bytes.fromhex(salt))
    return hmac.compare_digest(candidate, bytes.fromhex(digest))


def to_user(row: asyncpg.Record) -> User:
    return User(**dict(row))


async def create(tx: Transaction, new: UserCreate) -> asyncpg.Record | None:
    """The inserted row, or None when the email is taken."""
    return await tx.fetchrow(
        f"INSERT INTO users (email, name, password_hash) VALUES ($1, $2, $3)"
        f" ON CONFLICT (lower(email)) DO NOTHING RETURNING {COLUMNS}",
        new.email,
        new.name,
        await hash_password(new.password),
    )


async def get(db: Database, user_id: int, fresh: bool) -> asyncpg.Record | None:
    return await db.fetchrow(GET_ONE, user_id, fresh=fresh)


async def credentials(db: Database, email: str) -> asyncpg.Record | None:
    """id and password hash for a login; read from the primary so a just-created user can log in."""
    return await db.fetchrow(CREDENTIALS, email, fresh=True)
