"""`sample serve`: uvicorn on LISTEN_ADDRESS:PORT (0.0.0.0:8080 by default), WEB_CONCURRENCY workers, uvloop, httptools.

On SIGTERM each worker marks itself draining (/readyz -> 503), closes its realtime connections in batches
(realtime.py), then stops accepting, lets in-flight requests finish for up to SHUTDOWN_TIMEOUT_SECONDS and
closes its pools (lifecycle.py).

WebSockets use uvicorn's `websockets-sansio` protocol: a protocol ping every EVENTS_HEARTBEAT_SECONDS, and a
peer that does not answer within as long again is closed (1011). permessage-deflate is negotiated when the
client offers it, unless WS_COMPRESSION is off. Memory per connection is bounded: reading pauses after each
client message until the app has taken it, and a send waits while the transport's write buffer is above its
high-water mark (pause_writing), so a client that stops reading blocks its sender instead of growing a
buffer; its bus queue then overflows and it is closed with 4000 (api/websocket.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import uvicorn

from sample.config import Settings

WS_MAX_MESSAGE_BYTES = 64 * 1024
"""A bigger client frame closes the WebSocket with 1009; subscribe frames are far smaller."""


def serve(settings: Settings) -> None:
    metrics_dir = None
    if settings.web_concurrency > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers are separate processes: they share metrics through files in /tmp (an emptyDir).
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sample-metrics-")
    try:
        _run(settings)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run(settings: Settings) -> None:
    uvicorn.run(
        "sample.app:create_app",
        factory=True,
        host=settings.listen_address,
        port=settings.port,
        workers=settings.web_concurrency,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        ws_per_message_deflate=settings.ws_compression,
        ws_ping_interval=settings.events_heartbeat_seconds,
        ws_ping_timeout=settings.events_heartbeat_seconds,
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
        timeout_keep_alive=30,
    )
