"""`sample serve`: uvicorn on LISTEN_ADDRESS:PORT (0.0.0.0:8080 by default), WEB_CONCURRENCY workers, uvloop, httptools.

On SIGTERM each worker marks itself draining (/readyz -> 503, event streams end; see lifecycle.py),
stops accepting, lets in-flight requests finish for up to SHUTDOWN_TIMEOUT_SECONDS, then closes its pools.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import uvicorn

from sample.config import Settings


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
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
        timeout_keep_alive=30,
    )
