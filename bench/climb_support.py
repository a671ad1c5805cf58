"""Pieces of bench/climb.py: the sample service as a child process, the front it sits behind, steady
clients that log every answer, the `sample climb` command as the Job runs it, and the gap arithmetic.

- `serve(env, log)`: `sample serve` on a free loopback port, ready when /healthz answers 200.
- `Front`: testsupport's TcpProxy; `switch(port)` sends every *new* connection to the other tier, as
  a Service does once its endpoints changed (a connection already open stays where it is). Every
  client here opens one connection per request, so the switch takes effect at the next request.
- `Steady`: a thread calling `attempt()` at a fixed rate (start times `interval` apart; when an
  answer takes longer the next starts at once), keeping (sent, answered, status, note) of each.
- `climb(env, *args)`: `python -m sample climb ARGS` to completion with only `env` (plus PATH,
  HOME, LANG, VIRTUAL_ENV), as tests/climb_helpers.py runs it; its JSON report and its own seconds.
- `longest_gap(times, start, end)`: the longest time between two successive acknowledged writes,
  counting from the last one before `start` to the first one after `end`.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testsupport.process import LOOPBACK, ServerProcess, free_port
from testsupport.tcp_proxy import TcpProxy

QUIET = {"LOG_LEVEL": "warning", "ACCESS_LOG": "false", "COOKIE_SECURE": "false"}


@dataclass
class Answer:
    status: int
    """0: no HTTP answer (connection refused or reset, timeout)"""
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, path: str, body: Any = None, cookie: str | None = None) -> Answer:
    """One request on a new connection; an OSError is an Answer with status 0."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=15)
    headers = {"content-type": "application/json"} if body is not None else {}
    if cookie:
        headers["cookie"] = cookie
    try:
        conn.request(method, path, None if body is None else json.dumps(body).encode(), headers)
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    except (OSError, http.client.HTTPException) as exc:
        return Answer(0, {}, repr(exc).encode())
    finally:
        conn.close()


def healthy(port: int) -> bool:
    return request(port, "GET", "/healthz").status == 200


class Service:
    """`sample serve` with `env` (+ QUIET) on a free loopback port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.process = ServerProcess(
            [sys.executable, "-m", "sample", "serve"],
            ready=lambda: healthy(self.port),
            log=log,
            env={**QUIET, **env, "PORT": str(self.port), "LISTEN_ADDRESS": LOOPBACK},
            timeout=60,
        )

    def stop(self) -> None:
        self.process.stop()


class Front:
    """The Service/Gateway in front of the web tier: new connections go to one tier's port."""

    def __init__(self, port: int) -> None:
        self.proxy = TcpProxy(port)
        self.port = self.proxy.port

    def switch(self, port: int) -> float:
        """New connections to `port` from now on; the moment it happened (monotonic)."""
        self.proxy.retarget(port)
        return time.monotonic()

    def close(self) -> None:
        self.proxy.close()


@dataclass
class Outcome:
    sent: float
    answered: float
    status: int
    note: str = ""


@dataclass
class Steady:
    """Calls `attempt()` -> (status, note) every `interval` seconds on a thread until `stop()`."""

    name: str
    interval: float
    attempt: Callable[[], tuple[int, str]]
    outcomes: list[Outcome] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            due = time.monotonic()
            while not self._stop.is_set():
                sent = time.monotonic()
                status, note = self.attempt()
                self.outcomes.append(Outcome(sent, time.monotonic(), status, note))
                due += self.interval
                pause = due - time.monotonic()
                if pause > 0:
                    self._stop.wait(pause)
                else:
                    due = time.monotonic()  # late: the next one at once, no burst to catch up
        except BaseException as exc:  # reported by wait_for / stop
            self.error = exc

    def acknowledged(self, ok: Sequence[int] = (200, 201)) -> list[float]:
        return [o.answered for o in list(self.outcomes) if o.status in ok]

    def wait_for(self, count: int, after: float, timeout: float = 60.0, ok: Sequence[int] = (200, 201)) -> None:
        """Until `count` acknowledged answers arrived after `after` (monotonic)."""
        deadline = time.monotonic() + timeout
        while sum(1 for t in self.acknowledged(ok) if t > after) < count:
            if self.error is not None or not self._thread.is_alive():
                raise RuntimeError(f"{self.name} stopped: {self.error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: fewer than {count} acknowledged answers within {timeout}s")
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise RuntimeError(f"{self.name} failed: {self.error!r}") from self.error


def longest_gap(times: Sequence[float], start: float, end: float) -> float:
    """Seconds: the longest time between successive `times` from the last one at or before `start`
    to the first one after `end` (both must exist)."""
    ordered = sorted(times)
    before = [t for t in ordered if t <= start]
    after = [t for t in ordered if t > end]
    if not before or not after:
        raise RuntimeError("no acknowledged write before the step or none after it")
    inside = [before[-1], *(t for t in ordered if start < t <= end), after[0]]
    return max(b - a for a, b in itertools.pairwise(inside))


@dataclass
class Climbed:
    report: dict[str, Any]
    seconds: float
    """the command's whole run, process start included, as the Job's would"""
    started: float
    ended: float


def climb(env: dict[str, str], *args: str) -> Climbed:
    """`python -m sample climb ARGS` to completion; fails loudly on a non-zero exit."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sample", "climb", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    ended = time.monotonic()
    if done.returncode != 0:
        raise RuntimeError(f"sample climb {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return Climbed(json.loads(done.stdout.splitlines()[-1]), ended - started, started, ended)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
