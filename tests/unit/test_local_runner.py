"""The runner against real (small, local) commands: order, progress, skips, failures, timeouts."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.local.cli import ROOT
from components.local.plan import Step
from components.local.runner import Runner, StepFailed

ENV = {"PATH": os.environ["PATH"]}


def shell(script: str) -> tuple[str, ...]:
    return ("sh", "-c", script)


def run(steps: list[Step], heartbeat: float = 30.0) -> str:
    out = io.StringIO()
    Runner(ENV, out, heartbeat_seconds=heartbeat).run(steps)
    return out.getvalue()


def test_steps_run_in_order_with_numbered_progress(tmp_path: Path) -> None:
    log = tmp_path / "log"
    output = run(
        [
            Step("first", shell(f"echo one >> {log}; echo hello from one")),
            Step("second", shell(f"echo two >> {log}")),
        ]
    )
    assert log.read_text() == "one\ntwo\n"
    lines = output.splitlines()
    assert lines[0] == "[1/2] first"
    assert lines[1] == f"    $ sh -c 'echo one >> {log}; echo hello from one'"
    assert lines[2] == "    | hello from one"
    assert lines[3].startswith("    done in ")
    assert lines[4] == "[2/2] second"
    assert lines[-1].startswith("all 2 steps done in ")


def test_step_env_and_cwd_reach_the_command(tmp_path: Path) -> None:
    output = run([Step("env", shell('echo "$GREETING in $(pwd)"'), env={"GREETING": "hi"}, cwd=tmp_path)])
    assert f"    | hi in {tmp_path}" in output


def test_a_step_already_done_is_skipped(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    output = run([Step("create", ("touch", str(marker)), skip_if=("true",))])
    assert not marker.exists()
    assert output.splitlines()[0] == "[1/1] create: already done (true succeeded)"


def test_a_step_that_does_not_apply_is_skipped(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    output = run([Step("destroy", ("touch", str(marker)), only_if=(("true",), ("false",)))])
    assert not marker.exists()
    assert output.splitlines()[0] == "[1/1] destroy: skipped, does not apply (false failed)"


def test_a_probe_whose_command_is_missing_counts_as_false(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    run([Step("create", ("touch", str(marker)), skip_if=("no-such-tool-here", "get"))])
    assert marker.exists()


def test_the_first_failure_stops_the_run_with_its_output(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = io.StringIO()
    with pytest.raises(StepFailed) as failure:
        Runner(ENV, out).run(
            [
                Step("deploy", shell("echo creating; echo 'error: no such context' >&2; exit 3")),
                Step("after", ("touch", str(marker))),
            ]
        )
    assert not marker.exists()
    assert failure.value.number == 1
    assert str(failure.value) == (
        "step 1 failed: deploy\n"
        "    $ sh -c 'echo creating; echo '\"'\"'error: no such context'\"'\"' >&2; exit 3'\n"
        "    exited with 3\n"
        "    last output:\n"
        "    | creating\n"
        "    | error: no such context"
    )


def test_a_command_that_cannot_start() -> None:
    with pytest.raises(StepFailed, match=r"could not start no-such-tool-here: .* \(run `scaleladder-local check`\)"):
        run([Step("tool", ("no-such-tool-here", "--version"))])


def test_a_step_past_its_timeout_is_killed() -> None:
    with pytest.raises(StepFailed, match=r"timed out after 1\.0s and was killed"):
        run([Step("hang", ("sleep", "30"), timeout=1.0)])


def test_a_timeout_kills_the_helpers_that_hold_the_output_open() -> None:
    """A background child keeps the pipe open; killing only the parent would leave the run waiting."""
    started = time.monotonic()
    with pytest.raises(StepFailed, match="timed out"):
        run([Step("hang", shell("sleep 30 & sleep 30; wait"), timeout=1.0)])
    assert time.monotonic() - started < 25


def test_a_quiet_long_step_shows_it_is_still_running() -> None:
    output = run([Step("wait", (sys.executable, "-c", "import time; time.sleep(2.5)"))], heartbeat=1.0)
    assert "    ... still running (" in output


def test_ctrl_c_is_passed_on_to_the_step_and_the_run_stops(tmp_path: Path) -> None:
    """SIGINT to the runner reaches the step's process group; the step's SIGINT handler runs."""
    marker = tmp_path / "got-sigint"
    script = (
        "import io, sys\n"
        "from components.local.plan import Step\n"
        "from components.local.runner import Runner\n"
        f"step = Step('wait', ('sh', '-c', 'trap \"touch {marker}; exit 130\" INT; echo waiting; sleep 120 & wait'))\n"
        "Runner({'PATH': '/usr/bin:/bin'}, sys.stdout).run([step])\n"
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert runner.stdout is not None
    for line in runner.stdout:
        if "| waiting" in line:
            break
    runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=40)
    assert runner.returncode != 0
    assert "KeyboardInterrupt" in err
    assert marker.exists()
