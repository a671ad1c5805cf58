"""The job worker (ROLE=worker, `sample worker`): pulls jobs and commits each job's effect once.

For each delivery of a job, following the kit's protocol (components/queue.py):

- its status is read from the results bucket; anything but `queued` means an earlier delivery
  committed the effect and only the ack was lost: ack and move on;
- otherwise the job runs, and its result is committed by compare-and-set from the revision read
  (a conflict means another delivery committed it first), then the message is acknowledged;
- a failure before JOBS_MAX_DELIVER deliveries is nak'ed with JOBS_RETRY_DELAY_MS delay; on the last
  delivery the job is republished to `<prefix>.dead.<kind>`, its status set `failed`, and acked;
- a worker that died on a job's last delivery leaves only JetStream's max-deliveries advisory:
  every worker listens for those, marks the job `failed` and removes it from the work queue.

Timeouts, no-responders and 503s during a leader election are retried, never fatal. On SIGTERM the
worker stops fetching; the job in flight finishes, or is nak'ed if it outlasts
SHUTDOWN_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

from sample import jobkinds
from sample.config import Settings
from sample.db import Database
from sample.queue import TRANSIENT, JobQueue, QueueUnavailable, retrying, status
from sample.shards import Shards

log = logging.getLogger(__name__)
FOREVER = float("inf")


class Worker:
    """One consumer loop on the shared durable consumer, plus the max-deliveries advisory handler."""

    def __init__(self, settings: Settings, queue: JobQueue, db: Database, shards: Shards | None = None) -> None:
        self.settings = settings
        self.queue = queue
        self.db = db
        self.shards = shards
        self.name = socket.gethostname()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def drain(self) -> None:
        """Stop fetching new jobs (called as SIGTERM arrives)."""
        self._stopping.set()

    async def stop(self) -> None:
        """Let the job in flight finish within SHUTDOWN_TIMEOUT_SECONDS, else cancel it (it is nak'ed)."""
        self.drain()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.settings.shutdown_timeout_seconds)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        settings = self.settings
        advisories = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{settings.jobs_stream}.{settings.jobs_consumer}"
        assert self.queue.nc is not None
        await self.queue.nc.subscribe(advisories, cb=self._on_max_deliveries)
        jobs = await retrying(
            lambda: self.queue.js.pull_subscribe_bind(durable=settings.jobs_consumer, stream=settings.jobs_stream),
            FOREVER,
        )
        log.info("worker ready", extra={"worker": self.name, "consumer": settings.jobs_consumer})
        while not self._stopping.is_set():
            try:
                messages = await jobs.fetch(1, timeout=1)
            except NatsTimeout:
                continue  # no job within a second: ask again
            except TRANSIENT as error:
                log.warning("fetch failed, retrying", extra={"error": f"{type(error).__name__}: {error}"})
                await asyncio.sleep(0.2)
                continue
            except Exception:  # e.g. the connection closed for good: keep the loop, /readyz reports NATS down
                log.exception("fetch failed, retrying in 1 s")
                await asyncio.sleep(1)
                continue
            for msg in messages:
                await self._deliver(msg)
        log.info("worker stopped fetching", extra={"worker": self.name})

    async def _deliver(self, msg: Msg) -> None:
        """Handle one delivery; on cancellation (shutdown timeout) nak it so another worker takes it now."""
        try:
            await self._handle(msg)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()
            log.warning("job interrupted by shutdown, nak'ed", extra={"job_id": _job_id(msg)})
            raise
        except (*TRANSIENT, QueueUnavailable) as error:
            # not acknowledged: the job comes back after the consumer's ack wait
            log.warning("job left unacknowledged", extra={"job_id": _job_id(msg), "error": repr(error)})
        except Exception:
            # unacknowledged too: delivered again after the ack wait, at most JOBS_MAX_DELIVER times
            log.exception("job handling failed", extra={"job_id": _job_id(msg)})

    async def _handle(self, msg: Msg) -> None:
        job_id = _job_id(msg)
        deliveries = msg.metadata.num_delivered or 1
        kv = await self.queue.results()
        entry = await retrying(lambda: kv.get(job_id), 10)
        state = json.loads(entry.value or b"{}")
        if state.get("status") != "queued":
            log.info("job already done, acking duplicate delivery", extra={"job_id": job_id})
            await msg.ack_sync()
            return
        kind = msg.subject.rsplit(".", 1)[-1]
        log.info("job started", extra={"job_id": job_id, "kind": kind, "delivery": deliveries})
        try:
            result = await jobkinds.run(self.db, kind, msg.data, self.shards)
        except (*TRANSIENT, QueueUnavailable):
            raise
        except Exception as error:
            reason = str(error) if isinstance(error, jobkinds.JobFailed) else f"{type(error).__name__}: {error}"
            await self._failed(msg, job_id, kind, deliveries, entry.revision, reason)
            return
        done = status("done", kind=kind, result=result, worker=self.name, deliveries=deliveries)
        try:
            await kv.update(job_id, done, last=entry.revision)
            log.info("job done", extra={"job_id": job_id, "delivery": deliveries})
        except KeyWrongLastSequenceError:
            log.info("job committed by another delivery", extra={"job_id": job_id})
        await msg.ack_sync()

    async def _failed(self, msg: Msg, job_id: str, kind: str, deliveries: int, revision: Any, reason: str) -> None:
        settings = self.settings
        if deliveries < settings.jobs_max_deliver:
            log.warning("job failed, retrying", extra={"job_id": job_id, "delivery": deliveries, "error": reason})
            await msg.nak(delay=settings.jobs_retry_delay_ms / 1000)
            return
        headers = {"Nats-Msg-Id": job_id, "Job-Error": reason[:500], "Job-Deliveries": str(deliveries)}
        subject = f"{settings.jobs_subject_prefix}.dead.{kind}"
        await retrying(lambda: self.queue.js.publish(subject, msg.data, headers=headers, timeout=2), 10)
        failed = status("failed", kind=kind, error=reason, deliveries=deliveries)
        with contextlib.suppress(KeyWrongLastSequenceError):  # another delivery finished it meanwhile
            await (await self.queue.results()).update(job_id, failed, last=revision)
        await msg.ack_sync()
        log.error("job dead-lettered", extra={"job_id": job_id, "deliveries": deliveries, "error": reason})

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        """A job whose worker died on its last delivery: mark it failed and take it off the work queue."""
        try:
            event = json.loads(advisory.data)
            stream, sequence = event["stream"], event["stream_seq"]
            try:
                original = await retrying(lambda: self.queue.js.get_msg(stream, sequence), 10)
            except NotFoundError:
                return  # another worker handled this advisory
            job_id = (original.headers or {}).get("Nats-Msg-Id", "")
            kv = await self.queue.results()
            entry = await retrying(lambda: kv.get(job_id), 10)
            if json.loads(entry.value or b"{}").get("status") == "queued":
                reason = f"no worker finished the job in {event['deliveries']} deliveries (each one stopped mid-job)"
                failed = status("failed", kind=(original.subject or "").rsplit(".", 1)[-1], error=reason)
                with contextlib.suppress(KeyWrongLastSequenceError):
                    await kv.update(job_id, failed, last=entry.revision)
                log.error("job failed after max deliveries", extra={"job_id": job_id, "error": reason})
            with contextlib.suppress(NotFoundError):
                await retrying(lambda: self.queue.js.delete_msg(stream, sequence), 10)
        except Exception:
            log.exception("max-deliveries advisory not handled", extra={"advisory": advisory.data[:500].decode()})


def _job_id(msg: Msg) -> str:
    return (msg.headers or {}).get("Nats-Msg-Id", "")
