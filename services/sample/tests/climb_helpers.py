"""Helpers for the `sample climb` tests: the command as a child process (to completion, or SIGKILLed when
its log shows a step start), and a writer placing orders through the running service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from sample_helpers import Client


def _env(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    return {**base, **env}


def climb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m sample climb ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "sample", "climb", *args],
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one-line JSON report of a successful run."""
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    parsed: dict[str, Any] = json.loads(lines[0])
    return parsed


def steps(stderr: str) -> list[str]:
    """The steps a run logged, in order."""
    found = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("msg") == "climb step":
            found.append(entry["step"])
    return found


def kill_at(env: dict[str, str], step: str, *args: str) -> list[str]:
    """Start `sample climb ARGS`, SIGKILL it as soon as its log shows `step` starting; the steps seen.

    Fails when the run ends without reaching `step`, or fails."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sample", "climb", *args],
        env=_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    lines: list[str] = []
    try:
        for line in proc.stderr:
            lines.append(line)
            seen += steps(line)
            if step in seen:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
        assert proc.stdout is not None
        proc.stdout.close()
        proc.stderr.close()
    assert step in seen, f"the run ended ({proc.returncode}) before step {step}:\n{''.join(lines)}"
    # killed; or, for a last step that is quick, done before the signal arrived (a re-run then finds the record)
    assert proc.returncode in (-signal.SIGKILL, 0), proc.returncode
    return seen


class OrderWriter:
    """A thread placing one-item orders for `users` in turn through the service until stopped.

    `acknowledged`: ids of the orders answered 201; `refused`: Retry-After of each 503; anything else fails."""

    def __init__(self, client: Client, users: list[int], product_id: int = 1) -> None:
        self.client = client
        self.users = users
        self.product_id = product_id
        self.acknowledged: list[int] = []
        self.refused: list[str] = []
        self.unexpected: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            user = self.users[n % len(self.users)]
            n += 1
            reply = self.client.post(
                "/orders", {"user_id": user, "items": [{"product_id": self.product_id, "quantity": 1}]}
            )
            if reply.status == 201:
                self.acknowledged.append(int(reply.json()["id"]))
            elif reply.status == 503:
                self.refused.append(reply.header("retry-after") or "")
                time.sleep(0.02)
            else:
                self.unexpected.append(f"{reply.status} {reply.body!r}")

    def wait_for(self, what: str, count: int, timeout: float = 60.0) -> None:
        """Wait until `count` more orders were acknowledged (`what`="acknowledged") or refused."""
        target = len(getattr(self, what)) + count
        deadline = time.monotonic() + timeout
        while len(getattr(self, what)) < target:
            assert time.monotonic() < deadline, f"fewer than {count} more {what} orders within {timeout}s"
            assert self._thread.is_alive()
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
