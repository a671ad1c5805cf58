"""Execute a plan: each step numbered, its command shown, its output streamed, its time measured.

Long steps (cluster creation, `pulumi up`) print a heartbeat when they have been quiet for a
while, so a waiting terminal never looks hung. The first failing step stops the run with its
exit code and the tail of its output; a step that outlives its timeout is killed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from components.local.plan import Argv, Step

PROBE_TIMEOUT = 60.0
TAIL_LINES = 20
INTERRUPT_GRACE = 30.0


class StepFailed(RuntimeError):
    """A step exited non-zero, could not start, or timed out."""

    def __init__(self, number: int, step: Step, reason: str, tail: Sequence[str] = ()) -> None:
        self.number = number
        self.step = step
        self.reason = reason
        shown = "\n".join(f"    | {line}" for line in tail)
        super().__init__(
            f"step {number} failed: {step.description}\n    $ {shlex.join(step.argv)}\n    {reason}"
            + (f"\n    last output:\n{shown}" if shown else "")
        )


def signal_group(process: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Signal the step's whole process group (pulumi's plugins, kind's docker calls)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def elapsed(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


def probe(argv: Argv, env: Mapping[str, str], cwd: Path | None = None) -> bool:
    """True when the probe command exits 0; a missing command or a hang counts as false."""
    try:
        done = subprocess.run(argv, env=dict(env), cwd=cwd, capture_output=True, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class Runner:
    """Runs steps in order with progress on `out`; `env` is the base environment of every command."""

    def __init__(self, env: Mapping[str, str], out: TextIO, heartbeat_seconds: float = 30.0) -> None:
        self.env = dict(env)
        self.out = out
        self.heartbeat_seconds = heartbeat_seconds
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def run(self, steps: Sequence[Step]) -> None:
        started = time.monotonic()
        for number, step in enumerate(steps, 1):
            header = f"[{number}/{len(steps)}] {step.description}"
            env = {**self.env, **step.env}
            unmet = next((argv for argv in step.only_if if not probe(argv, env, step.cwd)), None)
            if unmet is not None:
                self.say(f"{header}: skipped, does not apply ({shlex.join(unmet)} failed)")
                continue
            if step.skip_if is not None and probe(step.skip_if, env, step.cwd):
                self.say(f"{header}: already done ({shlex.join(step.skip_if)} succeeded)")
                continue
            self.say(f"{header}\n    $ {shlex.join(step.argv)}")
            took = self.execute(number, step, env)
            self.say(f"    done in {elapsed(took)}")
        self.say(f"all {len(steps)} steps done in {elapsed(time.monotonic() - started)}")

    def execute(self, number: int, step: Step, env: dict[str, str]) -> float:
        """Run one step, streaming its output; returns its duration or raises StepFailed."""
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                step.argv,
                env=env,
                cwd=step.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,  # its own process group: a timeout kills its helpers too
            )
        except OSError as error:
            raise StepFailed(
                number, step, f"could not start {step.argv[0]}: {error} (run `scaleladder-local check`)"
            ) from None
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        last_output = [time.monotonic()]
        finished = threading.Event()
        timed_out = threading.Event()

        def watch() -> None:
            while not finished.wait(1.0):
                now = time.monotonic()
                if now - started > step.timeout:
                    timed_out.set()
                    signal_group(process, signal.SIGKILL)
                    return
                if now - last_output[0] >= self.heartbeat_seconds:
                    last_output[0] = now
                    self.say(f"    ... still running ({elapsed(now - started)})")

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert process.stdout is not None
        try:
            for line in process.stdout:
                last_output[0] = time.monotonic()
                tail.append(line.rstrip("\n"))
                self.say(f"    | {line.rstrip()}")
            code = process.wait()
        except KeyboardInterrupt:
            # Ctrl-C reaches only us (the step has its own session): pass it on, let it stop cleanly
            self.say(f"    interrupted: stopping {step.argv[0]} (up to {INTERRUPT_GRACE:.0f}s)")
            signal_group(process, signal.SIGINT)
            try:
                process.wait(timeout=INTERRUPT_GRACE)
            except subprocess.TimeoutExpired:
                signal_group(process, signal.SIGKILL)
                process.wait()
            raise
        finally:
            finished.set()
            watcher.join()
        if timed_out.is_set():
            raise StepFailed(number, step, f"timed out after {elapsed(step.timeout)} and was killed", list(tail))
        if code != 0:
            raise StepFailed(number, step, f"exited with {code}", list(tail))
        return time.monotonic() - started
