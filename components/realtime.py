"""Long-lived client connections (WebSocket `/ws`, server-sent events `/events`): cap, drain, scale.

The sample service counts its open streams (`realtime_connections{transport}` on `/metrics`, and
`GET /realtime/connections` summed over every process in Redis). These settings become its
environment on every tier that serves traffic:

- `max_connections` caps the streams of one pod: at the cap the app answers 503 to new ones and
  `/readyz` fails, so the pod leaves the Service's endpoints until streams close. The app counts
  per process: the cap is split over `WEB_CONCURRENCY` processes.
- On SIGTERM the app closes `drain_batch_percent` of its streams every `drain_batch_interval_ms`
  (WebSocket close 1012 "reconnect elsewhere", SSE ended; clients reconnect to other pods), and
  only after the last batch starts its normal shutdown. A rolling update (`maxUnavailable: 0`, one
  pod at a time) thus drops at most that share of a pod's clients at once.
- `target_connections` is what the phase-6 autoscaler aims for per pod (components/web.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from components.settings import setting

STREAM_PATHS = ("/ws", "/events")
"""The service's long-lived paths: no request timeout, never cached, carried as upgrades."""
PRE_STOP_SECONDS = 5
"""The web container's preStop sleep: endpoints and load balancers stop sending before SIGTERM."""
APP_SHUTDOWN_SECONDS = 20
"""The app's SHUTDOWN_TIMEOUT_SECONDS default: in-flight requests may run this long after the drain."""


@dataclass(frozen=True)
class Realtime:
    """Per-pod limits of long-lived connections, and how a stopping pod sheds them."""

    max_connections: int = setting(
        1000,
        "WebSocket + SSE connections a pod holds; beyond: 503 and the pod reports not ready",
        minimum=1,
        maximum=1_000_000,
    )
    target_connections: int = setting(
        800, "connections per pod the phase-6 autoscaler aims for (KEDA on the catalog)", minimum=1, maximum=1_000_000
    )
    drain_batch_percent: int = setting(
        10, "share of a stopping pod's connections closed per batch ('reconnect elsewhere')", minimum=1, maximum=100
    )
    drain_batch_interval_ms: int = setting(1000, "pause between two drain batches", minimum=0, maximum=60_000)
    compression: bool = setting(
        True,
        "permessage-deflate for WebSocket clients that offer it; off: ~35 KiB less per connection, no per-subscriber "
        "compression of every event (docs/realtime.md)",
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.target_connections > self.max_connections:
            yield (
                "target_connections",
                f"must be <= max_connections ({self.max_connections}), got {self.target_connections}",
            )

    def drain_seconds(self) -> float:
        """How long the batches take: ceil(100 / percent) batches, one interval apart."""
        return math.ceil(100 / self.drain_batch_percent) * self.drain_batch_interval_ms / 1000

    def per_process(self, processes: int) -> int:
        """The app's cap per process: the pod's cap split over its processes, at least one each."""
        return max(1, self.max_connections // processes)

    def env(self, processes: int) -> list[dict[str, Any]]:
        return [
            {"name": "REALTIME_MAX_CONNECTIONS", "value": str(self.per_process(processes))},
            {"name": "DRAIN_BATCH_PERCENT", "value": str(self.drain_batch_percent)},
            {"name": "DRAIN_BATCH_INTERVAL_MS", "value": str(self.drain_batch_interval_ms)},
            {"name": "WS_COMPRESSION", "value": "true" if self.compression else "false"},
        ]


def stopping_seconds(realtime: Realtime, shutdown_seconds: int) -> float:
    """A pod's stop, end to end: the preStop sleep, the drain batches, then the app's shutdown."""
    return PRE_STOP_SECONDS + realtime.drain_seconds() + shutdown_seconds
