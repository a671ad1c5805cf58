"""The job queue's client side: one NATS connection, submitting a job and reading its status.

The protocol is the kit's (components/queue.py): the status key is created `queued` in the results
bucket first, then the job is published to `<JOBS_SUBJECT_PREFIX>.submit.<kind>` with header
`Nats-Msg-Id: <id>`; both steps are safe to retry (the key is created once, the stream drops a
repeated id). Status reads go to the bucket's stream leader (direct reads are off in the kit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as Nats
from nats.errors import ConnectionClosedError, ConnectionReconnectingError, NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoStreamResponseError, ServiceUnavailableError
from nats.js.kv import KeyValue

from sample.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# what a member's loss looks like to a client until a new leader is elected: retry, never crash
TRANSIENT = (
    NatsTimeout,
    NoRespondersError,
    NoStreamResponseError,
    ServiceUnavailableError,
    ConnectionReconnectingError,
    asyncio.TimeoutError,
)
CONNECT_SECONDS = 30.0
SUBMIT_SECONDS = 5.0


class QueueUnavailable(Exception):
    """The cluster did not accept the request within the deadline (no leader, or no server reachable)."""


def status(state: str, **fields: Any) -> bytes:
    """A job's status record as stored in the results bucket."""
    return json.dumps({"status": state, **fields}, separators=(",", ":")).encode()


async def retrying(call: Callable[[], Awaitable[T]], seconds: float) -> T:
    """`call()`, retried through a leader election (timeouts, no responders, 503) for up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except TRANSIENT as error:
            if time.monotonic() > deadline:
                raise QueueUnavailable(f"{type(error).__name__}: {error}") from error
            await asyncio.sleep(0.2)


class JobQueue:
    """The connection to NATS_URL, its JetStream context and the results bucket."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nc: Nats | None = None
        self._kv: KeyValue | None = None

    @property
    def js(self) -> JetStreamContext:
        assert self.nc is not None, "JobQueue.open() not awaited"
        return self.nc.jetstream()

    async def open(self) -> None:
        """Connect (retrying for up to 30 s while the cluster starts); reconnects forever afterwards."""
        servers = self.settings.nats_url.split(",")
        deadline = time.monotonic() + CONNECT_SECONDS
        while True:
            try:
                self.nc = await nats.connect(
                    servers=servers,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=_report,
                    name="scaleladder-sample",
                )
                return
            except (NoServersError, OSError) as error:
                if time.monotonic() > deadline:
                    raise
                log.warning("NATS not reachable yet, retrying", extra={"error": str(error)})
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def ping(self, timeout: float) -> None:
        """A PING/PONG round trip to the connected server within `timeout`; raises when disconnected."""
        if self.nc is None or not self.nc.is_connected:
            raise ConnectionClosedError
        await asyncio.wait_for(self.nc.flush(), timeout)

    async def results(self) -> KeyValue:
        """The results bucket, looked up once it exists (the provisioning Job may still be running)."""
        if self._kv is None:
            self._kv = await retrying(lambda: self.js.key_value(self.settings.jobs_results_bucket), SUBMIT_SECONDS)
        return self._kv

    async def submit(self, kind: str, payload: bytes) -> str:
        """Enqueue a job: its status key `queued` first, then the message; returns the job id."""
        job_id = uuid.uuid4().hex
        subject = f"{self.settings.jobs_subject_prefix}.submit.{kind}"

        async def once() -> None:
            kv = await self.results()
            with contextlib.suppress(KeyWrongLastSequenceError):  # an earlier attempt created it
                await kv.create(job_id, status("queued", kind=kind))
            await self.js.publish(subject, payload, headers={"Nats-Msg-Id": job_id}, timeout=2)

        await retrying(once, SUBMIT_SECONDS)
        return job_id

    async def read(self, job_id: str) -> dict[str, Any] | None:
        """The job's status record, or None when the bucket has no such job."""

        async def once() -> dict[str, Any] | None:
            try:
                entry = await (await self.results()).get(job_id)
            except KeyNotFoundError:
                return None
            value: dict[str, Any] = json.loads(entry.value or b"{}")
            return value

        return await retrying(once, SUBMIT_SECONDS)


async def _report(error: Exception) -> None:
    log.warning("nats connection problem", extra={"error": f"{type(error).__name__}: {error}"})
