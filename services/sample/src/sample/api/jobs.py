"""Async jobs: POST /jobs enqueues a job (202 + id + Location), GET /jobs/{id} reads its status and result.

A job is `{"kind": <one of jobkinds.KINDS>, "payload": {...}}`; the payload is validated here, before
anything is enqueued, so a bad request is a 4xx naming the field rather than a failed job.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from sample.api.users import current_user_id
from sample.errors import ApiError
from sample.jobkinds import KINDS
from sample.models import Strict
from sample.queue import JobQueue, QueueUnavailable
from sample.repo import orders, sharded
from sample.responses import encode, json_response
from sample.routing import PathRoute
from sample.services import of
from sample.validation import _describe, parse_body

JOB_ID = re.compile(r"[0-9a-f]{32}")
MAX_PAYLOAD_BYTES = 4096


class JobCreate(Strict):
    kind: str
    payload: dict[str, Any]


def _queue(request: Request) -> JobQueue:
    queue = of(request).jobs
    if queue is None:
        raise ApiError(404, "jobs_disabled", "jobs: off in this deployment (NATS_URL not set)")
    return queue


async def _authorize(request: Request, job: JobCreate) -> None:
    """With sessions on, a logged-in user may only ask for jobs about their own orders."""
    svc = of(request)
    if svc.sessions is None:
        return
    user_id = await current_user_id(svc, request)
    order_id = job.payload["order_id"]
    if svc.shards is not None:
        row = await sharded.get_order(svc.shards, order_id, fresh=True)
    else:
        row = await orders.get(svc.db, order_id, fresh=True)
    if row is None or row["user_id"] != user_id:
        raise ApiError(404, "not_found", f"payload.order_id: order {order_id} does not exist")


def _payload(job: JobCreate) -> bytes:
    """The payload, checked against its kind's model, as the bytes the worker decodes."""
    if job.kind not in KINDS:
        raise ApiError(422, "invalid_body", f"kind: got {job.kind!r}, allowed: {', '.join(KINDS)}")
    try:
        msgspec.convert(job.payload, KINDS[job.kind][0])
    except msgspec.ValidationError as exc:
        message = _describe(str(exc), job.payload)
        where = "payload" if message.startswith("request body") else "payload."
        raise ApiError(422, "invalid_body", where + message.removeprefix("request body")) from None
    data = msgspec.json.encode(job.payload)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ApiError(422, "invalid_body", f"payload: {len(data)} bytes, allowed: at most {MAX_PAYLOAD_BYTES}")
    return data


async def submit_job(request: Request) -> Response:
    queue = _queue(request)
    job = await parse_body(request, JobCreate, of(request).settings.max_body_bytes)
    payload = _payload(job)
    await _authorize(request, job)
    try:
        job_id = await queue.submit(job.kind, payload)
    except QueueUnavailable as error:
        raise ApiError(503, "queue_unavailable", f"jobs: the queue did not accept the job in time ({error})") from None
    response = json_response(request, encode({"id": job_id, "kind": job.kind, "status": "queued"}), status=202)
    response.headers["location"] = f"/jobs/{job_id}"
    return response


async def get_job(request: Request) -> Response:
    queue = _queue(request)
    job_id = request.path_params["id"]
    if not JOB_ID.fullmatch(job_id):
        raise ApiError(400, "invalid_parameter", f"id: got {job_id!r}, allowed: a job id (32 hex digits)")
    try:
        state = await queue.read(job_id)
    except QueueUnavailable as error:
        raise ApiError(503, "queue_unavailable", f"jobs: the job's status could not be read ({error})") from None
    if state is None:
        raise ApiError(404, "not_found", f"id: job {job_id} does not exist (or has expired)")
    return json_response(request, encode({"id": job_id, **state}))


ROUTES = [
    PathRoute("/jobs", post=submit_job),
    PathRoute("/jobs/{id}", get=get_job),
]
