"""The per-process dependencies built from Settings: pools, Redis client and the features on it."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from sample import gc_tuning, lifecycle
from sample.cache import Cache
from sample.config import Settings
from sample.db import Database
from sample.events import EventBus
from sample.queue import JobQueue
from sample.ratelimit import RateLimiter
from sample.realtime import Connections
from sample.realtime_totals import ConnectionTotals
from sample.redisconn import RedisClient, connect
from sample.repo.products import ProductReader
from sample.sessions import SessionStore
from sample.shards import Shards, shard_settings
from sample.upstream import Upstream
from sample.worker import Worker


@dataclass
class Services:
    settings: Settings
    db: Database
    products: ProductReader
    redis: RedisClient | None
    cache: Cache | None
    sessions: SessionStore | None
    limiter: RateLimiter | None
    events: EventBus | None
    realtime: Connections
    totals: ConnectionTotals | None
    jobs: JobQueue | None
    worker: Worker | None
    catalog: Upstream | None
    orders: Upstream | None
    shards: Shards | None

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Only what the switches turn on is built; with REDIS_URL empty every Redis feature is None."""
        redis = connect(settings.redis_url, settings.redis_mode) if settings.redis_url else None
        on = redis is not None
        db = Database(settings)
        sharding = shard_settings(os.environ)
        shards = Shards(settings, sharding, db) if sharding is not None else None
        jobs = JobQueue(settings) if settings.nats_url else None
        timeout = settings.upstream_timeout_ms / 1000
        realtime = Connections(settings.realtime_max_connections)
        return cls(
            settings=settings,
            db=db,
            products=ProductReader(db),
            redis=redis,
            cache=Cache(redis, settings) if on and settings.cache_enabled else None,
            sessions=(
                SessionStore(redis, settings.session_ttl_seconds, settings.cookie_secure)
                if on and settings.sessions_enabled
                else None
            ),
            limiter=RateLimiter(redis, settings) if on and settings.rate_limit_enabled else None,
            events=EventBus(redis, settings.events_history) if on and settings.events_enabled else None,
            realtime=realtime,
            totals=ConnectionTotals(redis, realtime) if on and settings.events_enabled else None,
            jobs=jobs,
            worker=Worker(settings, jobs, db, shards) if jobs is not None and settings.role == "worker" else None,
            catalog=Upstream("catalog", settings.catalog_url, timeout) if settings.catalog_url else None,
            orders=Upstream("orders", settings.orders_url, timeout) if settings.orders_url else None,
            shards=shards,
        )

    async def start(self) -> None:
        lifecycle.chain_signal_handlers()
        await self.db.open()
        if self.shards is not None:
            await self.shards.open()
        if self.events is not None:
            self.events.start()
            lifecycle.before_shutdown(self._drain_realtime)
        if self.totals is not None:
            self.totals.start()
        gc_tuning.tune()
        if self.jobs is not None:
            await self.jobs.open()
        if self.worker is not None:
            self.worker.start()
            lifecycle.on_drain(self.worker.drain)

    async def _drain_realtime(self) -> None:
        """On SIGTERM: close /ws and /events connections in batches before uvicorn's shutdown closes the rest."""
        interval = self.settings.drain_batch_interval_ms / 1000
        await self.realtime.drain(self.settings.drain_batch_percent, interval)

    async def stop(self) -> None:
        """Close everything; called after in-flight requests drained."""
        if self.worker is not None:
            await self.worker.stop()
        if self.jobs is not None:
            await self.jobs.close()
        if self.events is not None:
            await self.events.stop()
        if self.totals is not None:
            await self.totals.stop()
        if self.shards is not None:
            await self.shards.close()
        await self.db.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()


def of(request: HTTPConnection) -> Services:
    return request.app.state.services
