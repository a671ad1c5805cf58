"""`sample serve`: uvicorn on 0.0.0.0:PORT with WEB_CONCURRENCY workers, uvloop and httptools.

On SIGTERM each worker marks itself draining (/readyz -> 503, event streams end), stops accepting,
lets in-flight requests finish for up to SHUTDOWN_TIMEOUT_SECONDS, then closes its pools.
"""

from __future__ import annotations

import os
import tempfile
from types import FrameType

import uvicorn
from uvicorn.supervisors import Multiprocess

from sample import lifecycle
from sample.config import Settings


class DrainingServer(uvicorn.Server):
    """uvicorn's server, announcing the drain to the app before uvicorn's own shutdown begins."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        lifecycle.begin_drain()
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    if settings.web_concurrency > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers are separate processes: they share metrics through files in /tmp (an emptyDir).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sample-metrics-")
    config = uvicorn.Config(
        "sample.app:create_app",
        factory=True,
        host="0.0.0.0",
        port=settings.port,
        workers=settings.web_concurrency,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
        timeout_keep_alive=30,
    )
    server = DrainingServer(config)
    if settings.web_concurrency > 1:
        Multiprocess(config, target=server.run, sockets=[config.bind_socket()]).run()
    else:
        server.run()
