"""The command line, run as a user would: files written, messages shown, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def scaleladder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "components", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_render_writes_one_file_per_part_with_integers_as_integers(tmp_path: Path) -> None:
    result = scaleladder("render", "phase2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = sorted(path.name for path in tmp_path.glob("*.yaml"))
    assert names[0] == "00-namespace.yaml" and len(names) >= 3
    objects = [doc for path in tmp_path.glob("*.yaml") for doc in yaml.safe_load_all(path.read_text())]
    web = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "web")
    assert web["spec"]["replicas"] == 1 and isinstance(web["spec"]["replicas"], int)
    assert f"{len(objects)} objects" in result.stdout


def test_several_mistakes_give_one_message_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.broken.yaml").write_text(
        "config:\n  scaleladder:phase: 9\n  scaleladder:web:\n    replicas: 0\n    colour: blue\n"
    )
    result = scaleladder("--stacks-dir", str(tmp_path), "render", "broken", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "scaleladder: stack broken: 3 configuration problem(s):",
        "  scaleladder:phase: must be <= 6, got 9",
        "  scaleladder:web.colour: unknown key; allowed keys here: autoscaling, env, image, realtime, replicas, "
        "resources, "
        "termination_grace_seconds",
        "  scaleladder:web.replicas: must be >= 1, got 0",
    ]
    assert not (tmp_path / "out").exists()


def test_unknown_stack_names_the_stacks_there_are(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.alpha.yaml").write_text("config: {}\n")
    result = scaleladder("--stacks-dir", str(tmp_path), "diagram", "beta")
    assert result.returncode == 2
    assert f"scaleladder:stack: no stack 'beta' in {tmp_path}; stacks: alpha" in result.stderr


def test_diagram_draws_the_topology_from_the_objects() -> None:
    result = scaleladder("diagram", "phase2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "flowchart LR" in lines
    assert "  Service_web --> Deployment_web" in lines
    assert any(line.startswith("  Deployment_web --> Service_postgres") for line in lines)


def test_config_reference_lists_every_setting() -> None:
    result = scaleladder("config-reference")
    assert result.returncode == 0, result.stderr
    assert "| `scaleladder:web.autoscaling.max_replicas` | int | `10` |" in result.stdout
