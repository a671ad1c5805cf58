"""GET /events: a Server-Sent Events stream of product and order changes, with heartbeats and resume.

Each stream counts against REALTIME_MAX_CONNECTIONS (503 at the cap or while draining, sample.realtime);
the drain or a slow-consumer drop ends it and the client resumes with Last-Event-ID."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sample.errors import ApiError
from sample.events import END, Event, EventBus, parse_id
from sample.realtime import Connection, Connections
from sample.routing import PathRoute
from sample.services import of

HEARTBEAT = b": heartbeat\n\n"


def _frame(event: Event) -> bytes:
    return b"id: " + event[0] + b"\nevent: change\ndata: " + event[1] + b"\n\n"


async def _stream(
    bus: EventBus,
    queue: asyncio.Queue[Event],
    last_id: str | None,
    heartbeat: int,
    connections: Connections,
    connection: Connection,
) -> AsyncIterator[bytes]:
    try:
        yield b"retry: 2000\n\n"
        seen = parse_id(last_id) if last_id else (0, 0)
        if last_id:
            for event in await bus.replay(last_id):
                seen = parse_id(event[0])
                yield _frame(event)
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                yield HEARTBEAT
                continue
            if event is END:  # a slow consumer, or the drain: the client resumes with Last-Event-ID
                return
            if parse_id(event[0]) > seen:  # not already sent by the replay
                yield _frame(event)
    finally:
        bus.unsubscribe(queue)
        connections.release(connection)


async def events(request: Request) -> Response:
    svc = of(request)
    if svc.events is None:
        raise ApiError(404, "events_disabled", "events: off in this deployment (EVENTS_ENABLED=false)")
    last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if last_id:
        try:
            parse_id(last_id)
        except ValueError:
            raise ApiError(
                400, "invalid_parameter", f"Last-Event-ID: got {last_id[:64]!r}, allowed: an id from this stream"
            ) from None
    bus = svc.events
    queue, connection = svc.realtime.subscribe(bus, "sse")
    return StreamingResponse(
        _stream(bus, queue, last_id, svc.settings.events_heartbeat_seconds, svc.realtime, connection),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


ROUTES = [PathRoute("/events", get=events)]
