"""Sessions in Redis: an opaque token in an HttpOnly browser-session cookie, the user id under its hash.

Nothing is kept in process memory, so any replica serves any request. Expiry slides: every
authenticated request resets the TTL to SESSION_TTL_SECONDS (GETEX).
"""

from __future__ import annotations

import hashlib
import secrets

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from sample.redisconn import RedisClient

COOKIE = "sid"


def _key(token: str) -> str:
    # Only a hash of the token is stored: a Redis dump does not hand out live sessions.
    return "session:" + hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Creates, resolves (sliding the TTL) and deletes sessions; sets and clears the cookie."""

    def __init__(self, client: RedisClient, ttl_seconds: int, cookie_secure: bool) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self.cookie_secure = cookie_secure

    async def create(self, user_id: int, response: Response) -> None:
        token = secrets.token_urlsafe(32)
        await self.client.set(_key(token), str(user_id), ex=self.ttl)
        response.set_cookie(COOKIE, token, httponly=True, secure=self.cookie_secure, samesite="lax", path="/")

    async def user_id(self, request: HTTPConnection) -> int | None:
        """The logged-in user id, or None (a request or a WebSocket handshake); remembered on it for later callers."""
        if "user_id" in request.scope.setdefault("state", {}):
            return request.scope["state"]["user_id"]
        token = request.cookies.get(COOKIE)
        user_id = None
        if token:
            value = await self.client.getex(_key(token), ex=self.ttl)
            user_id = int(value) if value is not None else None
        request.scope["state"]["user_id"] = user_id
        return user_id

    async def delete(self, request: Request, response: Response) -> None:
        token = request.cookies.get(COOKIE)
        if token:
            await self.client.delete(_key(token))
        response.delete_cookie(COOKIE, path="/", httponly=True, secure=self.cookie_secure, samesite="lax")
