"""GET /ws: a WebSocket of product and order changes, by topic, on the same event bus as /events.

Handshake (refused with an HTTP error body: 404 events off, 401 no session, 400 bad query, 503 at the
cap or draining): `/ws?topics=products,product:12,orders&last_id=<stream id>`; with `last_id` what the
client missed is replayed from the bus history first, then live events follow, each once, in stream-id
order. Client frames: `{"op": "subscribe" | "unsubscribe", "topics": [...]}`, answered with
`{"op": "subscribed", "topics": [<the full set, sorted>]}` or `{"op": "error", ...}` (the connection
stays). Server frames: `{"op": "event", "id", "type", "data"}`. Close codes: 4000 slow consumer, 1012
drain; both mean "resume from your last id". Heartbeats are protocol pings (uvicorn, server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from typing import Any, NamedTuple

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from sample import topics as topic_names
from sample.errors import ApiError, error_response
from sample.events import END, Event, EventBus, parse_id
from sample.realtime import Connection
from sample.responses import encode
from sample.routing import PathRoute
from sample.services import Services, of

OUTGOING_CACHE = 1024
"""Recent events kept encoded: more than a burst of publishes in flight to every subscriber at once."""
SLOW_CONSUMER = (4000, "slow consumer: resume from your last id")
RECONNECT_ELSEWHERE = (1012, "reconnect elsewhere")
LAST_ID_ALLOWED = "an event id from this stream, <ms>-<seq>"
STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
MAX_STREAM_ID_PART = 2**64 - 1
FRAME_ALLOWED = 'a JSON object {"op": "subscribe" or "unsubscribe", "topics": [...]}'


class InvalidMessage(ValueError):
    """A client frame the protocol does not allow; the message names the field, the value and what is allowed."""


def _topic_set(field: str, values: list[Any]) -> set[str]:
    if len(values) > topic_names.MAX_TOPICS:
        raise InvalidMessage(f"{field}: got {len(values)} topics, allowed: {topic_names.ALLOWED}")
    chosen = set()
    for value in values:
        try:
            chosen.add(topic_names.parse(value))
        except ValueError:
            raise InvalidMessage(f"{field}: got {str(value)[:64]!r}, allowed: {topic_names.ALLOWED}") from None
    return chosen


def _handshake_topics(connection: HTTPConnection) -> set[str]:
    raw = connection.query_params.get("topics", "")
    try:
        return _topic_set("topics", raw.split(",") if raw else [])
    except InvalidMessage as exc:
        raise ApiError(400, "invalid_parameter", str(exc)) from None


def _handshake_last_id(connection: HTTPConnection) -> str | None:
    last_id = connection.query_params.get("last_id") or None
    if last_id is not None:
        match = STREAM_ID.fullmatch(last_id)
        if match is None or max(int(match.group(1)), int(match.group(2))) > MAX_STREAM_ID_PART:
            message = f"last_id: got {last_id[:64]!r}, allowed: {LAST_ID_ALLOWED}"
            raise ApiError(400, "invalid_parameter", message)
    return last_id


async def _logged_in_user(svc: Services, websocket: WebSocket) -> int:
    user_id = await svc.sessions.user_id(websocket) if svc.sessions is not None else None
    if user_id is None:
        raise ApiError(401, "not_logged_in", "session: no valid session cookie, log in with POST /sessions")
    return user_id


def _request(text: str) -> tuple[str, list[Any]]:
    """(op, topics) of a client frame; InvalidMessage naming what is wrong."""
    try:
        message = msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise InvalidMessage(f"message: got {text[:64]!r}, allowed: {FRAME_ALLOWED}") from None
    if not isinstance(message, dict):
        raise InvalidMessage(f"message: got {text[:64]!r}, allowed: {FRAME_ALLOWED}")
    op, chosen = message.get("op"), message.get("topics")
    if op not in ("subscribe", "unsubscribe"):
        raise InvalidMessage(f"op: got {str(op)[:64]!r}, allowed: subscribe or unsubscribe")
    if not isinstance(chosen, list):
        raise InvalidMessage(f"topics: got {str(chosen)[:64]!r}, allowed: a list of {topic_names.ALLOWED}")
    return op, chosen


class Outgoing(NamedTuple):
    """One event as every subscriber needs it: its position in the stream, its type and data (for topic
    matching) and the frame's text."""

    position: tuple[int, int]
    type: str
    data: dict[str, Any]
    frame: str


@functools.lru_cache(maxsize=OUTGOING_CACHE)
def _outgoing(event_id: bytes, payload: bytes) -> Outgoing:
    """Decoded and encoded once per event, not once per subscriber: the fan-out of one event to
    thousands of subscribers hands each the same bytes, whose hash Python keeps after the first."""
    change = msgspec.json.decode(payload)
    frame = {"op": "event", "id": event_id.decode(), "type": change["type"], "data": change["data"]}
    return Outgoing(parse_id(event_id), change["type"], change["data"], encode(frame).decode())


class Subscriber:
    """One accepted WebSocket: sends its matching events and answers its subscribe/unsubscribe frames."""

    def __init__(
        self, websocket: WebSocket, bus: EventBus, queue: asyncio.Queue[Event], user_id: int, chosen: set[str]
    ) -> None:
        self.websocket = websocket
        self.bus = bus
        self.queue = queue
        self.user_id = user_id
        self.topics = chosen
        self._sending = asyncio.Lock()
        self._closed = False

    async def run(self, connection: Connection, last_id: str | None) -> None:
        """Until the client leaves or the server closes it (slow consumer, drain)."""
        tasks = {asyncio.create_task(self._send_events(connection, last_id)), asyncio.create_task(self._answer())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected):
                    task.result()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, WebSocketDisconnected):
                    await task

    async def _send_events(self, connection: Connection, last_id: str | None) -> None:
        seen = parse_id(last_id) if last_id else (0, 0)
        if last_id:
            for event in await self.bus.replay(last_id):
                outgoing = _outgoing(*event)
                seen = outgoing.position
                await self._send_outgoing(outgoing)
        while True:
            event = await self.queue.get()
            if event is END:
                await self._close(*(RECONNECT_ELSEWHERE if connection.drained else SLOW_CONSUMER))
                return
            outgoing = _outgoing(*event)
            if outgoing.position > seen:  # not already sent by the replay
                await self._send_outgoing(outgoing)

    async def _send_outgoing(self, outgoing: Outgoing) -> None:
        if topic_names.matches(self.topics, self.user_id, outgoing.type, outgoing.data):
            await self._send_text(outgoing.frame)

    async def _answer(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self._error(f"message: got a binary frame, allowed: a text frame with {FRAME_ALLOWED}")
                continue
            try:
                op, chosen = _request(text)
                changed = _topic_set("topics", chosen)
                topics = self.topics | changed if op == "subscribe" else self.topics - changed
                if len(topics) > topic_names.MAX_TOPICS:
                    raise InvalidMessage(f"topics: got {len(topics)} in all, allowed: {topic_names.ALLOWED}")
            except InvalidMessage as exc:
                await self._error(str(exc))
                continue
            self.topics = topics
            await self._send({"op": "subscribed", "topics": sorted(topics)})

    async def _error(self, message: str) -> None:
        await self._send({"op": "error", "code": "invalid_message", "message": message})

    async def _send(self, frame: dict[str, Any]) -> None:
        await self._send_text(encode(frame).decode())

    async def _send_text(self, text: str) -> None:
        async with self._sending:
            if not self._closed:
                await self.websocket.send_text(text)

    async def _close(self, code: int, reason: str) -> None:
        async with self._sending:
            self._closed = True
            await self.websocket.close(code, reason)


async def websocket_endpoint(websocket: WebSocket) -> None:
    svc = of(websocket)
    try:
        if svc.events is None:
            raise ApiError(404, "events_disabled", "events: off in this deployment (EVENTS_ENABLED=false)")
        user_id = await _logged_in_user(svc, websocket)
        chosen, last_id = _handshake_topics(websocket), _handshake_last_id(websocket)
        bus = svc.events
        queue, connection = svc.realtime.subscribe(bus, "websocket")
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message)
        response.headers.update(exc.headers)
        await websocket.send_denial_response(response)
        return
    try:
        await websocket.accept()
        await Subscriber(websocket, bus, queue, user_id, chosen).run(connection, last_id)
    finally:
        bus.unsubscribe(queue)
        svc.realtime.release(connection)


async def upgrade_required(request: Request) -> Response:
    """A plain GET /ws (no Upgrade header): its query is checked as a handshake's would be (400), then 426."""
    _handshake_topics(request)
    _handshake_last_id(request)
    message = "Upgrade: missing, allowed: websocket (a WebSocket handshake)"
    raise ApiError(426, "upgrade_required", message, {"upgrade": "websocket"})


ROUTES = [WebSocketRoute("/ws", websocket_endpoint), PathRoute("/ws", get=upgrade_required)]
