"""Prometheus metrics: HTTP requests by route and status, cache, DB pool, rate limits, events, realtime connections.

With several workers, uvicorn runs separate processes: `server.py` then points
PROMETHEUS_MULTIPROC_DIR at a fresh folder under /tmp before they start, and /metrics aggregates
every worker's values from there.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

disable_created_metrics()  # no *_created series: they double the exposition for nothing here
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route template and status.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
CACHE_REQUESTS = Counter("cache_requests_total", "Cache-aside lookups by result (hit or miss).", ["result"])
CACHE_REFRESHES = Counter("cache_refreshes_total", "Cache entries reloaded in the background before they expired.")
DB_QUERIES = Counter("db_queries_total", "SQL statements sent, by target (primary or replica).", ["target"])
DB_POOL = Gauge(
    "db_pool_connections",
    "Pool connections by target and state (in_use, idle, max).",
    ["target", "state"],
    multiprocess_mode="livesum",
)
DB_REPLICAS_HEALTHY = Gauge(
    "db_replicas_healthy", "Replicas that answered the last health check.", multiprocess_mode="livemax"
)
RATE_LIMITED = Counter("rate_limit_rejections_total", "Requests rejected with 429, by tier (ip or user).", ["tier"])
EVENTS_PUBLISHED = Counter("events_published_total", "Change events published, by type.", ["type"])
REALTIME_CONNECTIONS = Gauge(
    "realtime_connections",
    "Open realtime connections by transport (websocket, sse).",
    ["transport"],
    multiprocess_mode="livesum",
)
REALTIME_DISCONNECTS = Counter(
    "realtime_disconnects_total",
    "Realtime connections closed by the server, by reason (slow_consumer, drain).",
    ["reason"],
)
REALTIME_REJECTED = Counter(
    "realtime_rejected_total", "Realtime connections refused with 503, by reason (at_capacity, draining).", ["reason"]
)

CACHE_HIT = CACHE_REQUESTS.labels("hit")
CACHE_MISS = CACHE_REQUESTS.labels("miss")


def exposition() -> tuple[bytes, str]:
    """The metrics text of this process, or of all workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template ("/products/{id}"), not its URL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            key = (scope["method"], route.path if route is not None else "unmatched", status)
            children = self._children.get(key)
            if children is None:
                children = (HTTP_REQUESTS.labels(key[0], key[1], str(status)), HTTP_LATENCY.labels(key[0], key[1]))
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - start)
