"""Rate limiting in Redis, atomic in Lua: a token bucket or a sliding-window counter per subject.

Tiers: a logged-in user is limited by RATE_LIMIT_USER_LIMIT under their user id, anyone else by
RATE_LIMIT_IP_LIMIT under their client IP, per RATE_LIMIT_WINDOW_SECONDS. The token bucket holds
RATE_LIMIT_BURST tokens and refills at limit/window. Every limited response carries RateLimit-Limit,
RateLimit-Remaining and RateLimit-Reset; a rejection is a 429 with Retry-After. When Redis is
unreachable requests are let through (fail open) and a warning is logged.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sample.config import Settings
from sample.errors import error_body
from sample.metrics import RATE_LIMITED
from sample.redisconn import RedisClient
from sample.sessions import SessionStore

log = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_NOW_MS = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS[1] bucket hash; ARGV: capacity, refill rate in tokens per ms.
# Returns {allowed, tokens left, ms until a token is available, ms until the bucket is full}.
TOKEN_BUCKET = (
    _NOW_MS
    + """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed, retry = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return {allowed, math.floor(tokens), retry, math.ceil((capacity - tokens) / rate)}
"""
)

# KEYS[1] window hash; ARGV: limit, window in ms. The estimate weighs the previous fixed window's
# count by how much of it still overlaps the sliding window, plus the current window's count.
# Returns {allowed, requests left, ms until one more is allowed, ms until the current window ends}.
SLIDING_WINDOW = (
    _NOW_MS
    + """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local idx = math.floor(now / window)
local state = redis.call('HMGET', KEYS[1], 'idx', 'cur', 'prev')
local sidx = tonumber(state[1]) or idx
local cur = tonumber(state[2]) or 0
local prev = tonumber(state[3]) or 0
if sidx == idx - 1 then prev = cur cur = 0 elseif sidx < idx - 1 then prev = 0 cur = 0 end
local elapsed = now - idx * window
local estimate = prev * (window - elapsed) / window + cur
local allowed, retry = 0, 0
if estimate + 1 <= limit then
  cur = cur + 1
  estimate = estimate + 1
  allowed = 1
elseif cur + 1 > limit then
  retry = (window - elapsed) + math.ceil(window * (1 - (limit - 1) / cur))
else
  retry = math.ceil((window - elapsed) - window * (limit - 1 - cur) / prev)
end
redis.call('HSET', KEYS[1], 'idx', idx, 'cur', cur, 'prev', prev)
redis.call('PEXPIRE', KEYS[1], window * 2)
return {allowed, math.max(0, math.floor(limit - estimate)), math.max(retry, 1), window - elapsed}
"""
)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_ms: int
    reset_ms: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        pairs = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(math.ceil(self.reset_ms / 1000)).encode()),
        ]
        if not self.allowed:
            pairs.append((b"retry-after", str(max(1, math.ceil(self.retry_after_ms / 1000))).encode()))
        return pairs


class RateLimiter:
    """Runs the configured algorithm's script for one subject against one limit."""

    def __init__(self, client: RedisClient, settings: Settings) -> None:
        self.algorithm = settings.rate_limit_algorithm
        self.window_ms = settings.rate_limit_window_seconds * 1000
        self.burst = settings.rate_limit_burst
        script = TOKEN_BUCKET if self.algorithm == "token_bucket" else SLIDING_WINDOW
        self._script = client.register_script(script)

    async def check(self, subject: str, limit: int) -> Decision:
        key = f"ratelimit:{self.algorithm}:{subject}"
        if self.algorithm == "token_bucket":
            capacity = self.burst
            args = [capacity, repr(limit / self.window_ms)]
        else:
            capacity = limit
            args = [limit, self.window_ms]
        allowed, remaining, retry, reset = await self._script(keys=[key], args=args)
        return Decision(bool(allowed), capacity, int(remaining), int(retry), int(reset))


class RateLimitMiddleware:
    """Applies the user tier to logged-in requests and the IP tier to the rest; probes are exempt."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, sessions: SessionStore | None, settings: Settings) -> None:
        self.app = app
        self.limiter = limiter
        self.sessions = sessions
        self.ip_limit = settings.rate_limit_ip_limit
        self.user_limit = settings.rate_limit_user_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            decision, tier = await self._decide(scope)
        except Exception as exc:  # Redis down or slow: serve rather than fail every request
            log.warning("rate limiter unavailable, request let through", extra={"error": str(exc)})
            await self.app(scope, receive, send)
            return
        if not decision.allowed:
            RATE_LIMITED.labels(tier).inc()
            retry = max(1, math.ceil(decision.retry_after_ms / 1000))
            body = error_body(429, "rate_limited", f"{tier} rate limit exceeded: retry after {retry} s")
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [(b"content-type", b"application/json"), *decision.headers()],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        extra = decision.headers()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _decide(self, scope: Scope) -> tuple[Decision, str]:
        user_id = await self.sessions.user_id(Request(scope)) if self.sessions is not None else None
        if user_id is not None:
            return await self.limiter.check(f"user:{user_id}", self.user_limit), "user"
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        return await self.limiter.check(f"ip:{ip}", self.ip_limit), "ip"
