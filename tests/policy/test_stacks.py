"""Every stack passes every rule and strict schema validation; `check` reports and exits accordingly."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest

from components import cli
from policies import check

STACKS = cli.stack_names(cli.STACKS)


@pytest.mark.parametrize("name", STACKS)
def test_stack_passes_every_rule(name: str) -> None:
    assert [str(v) for v in check.check(cli.load_stack(name))] == []


def test_check_command_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["check", "phase3"]) == 0
    assert capsys.readouterr().out.endswith(" rules + schema: 0 mandatory, 0 advisory violation(s)\n")
    (tmp_path / "Pulumi.broken.yaml").write_text("config:\n  scaleladder:phase: 9\n")
    assert cli.main(["--stacks-dir", str(tmp_path), "check", "broken"]) == 2


def test_check_command_fails_on_a_violation(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "Pulumi.latest.yaml").write_text(
        "config:\n  scaleladder:phase: 2\n  scaleladder:web:\n    image: example/app:1.0\n"
    )
    assert cli.main(["--stacks-dir", str(tmp_path), "check", "latest"]) == 0
    capsys.readouterr()
    (tmp_path / "Pulumi.root.yaml").write_text(
        "config:\n  scaleladder:phase: 2\n  scaleladder:web:\n    env:\n      API_TOKEN: hunter2\n"
    )
    assert cli.main(["--stacks-dir", str(tmp_path), "check", "root"]) == 1
    out = capsys.readouterr().out
    assert (
        "[mandatory] secret-env-literal: Deployment/web: container web env API_TOKEN "
        "(spec.template.spec.containers[0].env[6].value) holds a secret as a literal; fix: mount the Secret as a "
        "read-only file"
    ) in out
    assert out.endswith("rules + schema: 1 mandatory, 0 advisory violation(s)\n") and out.count("\n") == 2


def test_check_reports_schema_problems_as_mandatory() -> None:
    stack = cli.load_stack("phase2")
    web = next(part for part in stack.parts if part.name == "web")
    deployment = copy.deepcopy(web.objects[0])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    typo = dataclasses.replace(web, objects=[deployment, *web.objects[1:]])
    broken = dataclasses.replace(stack, parts=tuple(typo if p is web else p for p in stack.parts))
    found = [str(v) for v in check.check(broken)]
    assert (
        "[mandatory] schema: Deployment/web (1.34.0): spec.template.spec.containers.0: Additional properties are not "
        "allowed ('readinesProbe' was unexpected)"
    ) in found
    assert (
        "[mandatory] probes: Deployment/web: container web has no readinessProbe (spec.template.spec.containers[0]); "
        "fix: add a readiness probe (can it serve?) and a liveness probe (is the process stuck?)"
    ) in found
