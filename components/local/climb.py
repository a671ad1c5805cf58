"""`scaleladder-local climb --stack NAME --to N`: one running stack up one rung, with its data.

A rung that moves data climbs in three stages (components/climb.py): expand, switch, and the
plain upper rung. For each stage this writes the stage's settings into the stack's generated config
file, previews it, refuses it if the engine would delete or replace anything holding data that the
stage does not retire, prints what will change, and runs `pulumi up --refresh`. An expand or
switch `up` waits for its copy Job, which fails unless the copy verified: a failed stage stops the
climb with the old tier serving.

The stage reached is recorded in the config file, so a climb that stopped (a failed Job, a crash,
Ctrl-C) is resumed by running the same command again; every stage is idempotent. Going down a rung
and skipping one are refused.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from components.climb import RUNGS, STAGES
from components.config import LAST_PHASE, decoded
from components.local.plan import Context

DATA_HOLDERS = frozenset({"PersistentVolumeClaim", "StatefulSet", "Secret"})
"""Kinds whose deletion or replacement loses data (a StatefulSet's claims outlive it, but its
replacement restarts every member at once)."""
RETIRED = {1: frozenset({"PersistentVolumeClaim/web-pgdata"}), 3: frozenset({"StatefulSet/session-store"})}
"""What the last stage of a rung deletes: the old tier, its data copied and verified."""
REPLACING = frozenset({"replace", "create-replacement", "delete-replaced", "discard-replaced", "read-replacement"})
OPS = {"create": "create", "import": "create", "update": "update", "delete": "delete", "discard": "delete"}
PHASE_KEY = "scaleladder:phase"
CLIMB_KEY = "scaleladder:climb"


class Refused(ValueError):
    """A climb (or a stage of it) that would go down, skip a rung, or lose data."""


class StageFailed(RuntimeError):
    """A `pulumi` command of a stage failed; the message ends with its output."""

    def __init__(self, argv: list[str], status: int, output: str) -> None:
        self.status = status
        super().__init__(f"`{' '.join(argv[-10:])}` exited {status}; its last output:\n{output[-6000:]}")


@dataclass(frozen=True)
class Position:
    """Where a stack is: on `phase`, or between `from_phase` and `phase` at `stage`."""

    phase: int
    from_phase: int = 0
    stage: str = ""

    def __str__(self) -> str:
        if self.from_phase:
            return f"climbing from phase {self.from_phase} to {self.phase}, stage {self.stage}"
        return f"at phase {self.phase}"


@dataclass(frozen=True)
class Stage:
    """One `pulumi up` of a climb: the settings it deploys and the data holders it may delete."""

    description: str
    phase: int
    climb: Mapping[str, Any]
    retires: frozenset[str] = frozenset()


def position(config: Mapping[str, Any]) -> Position:
    """From a stack file's `config`; Pulumi may have written the values back as (JSON) strings."""
    phase = config.get(PHASE_KEY, 1)
    climb = config.get(CLIMB_KEY) or {}
    phase = decoded(phase) if isinstance(phase, str) else phase
    climb = decoded(climb) if isinstance(climb, str) else climb
    if not climb:
        return Position(int(phase))
    return Position(int(phase), int(climb.get("from_phase", 0)), str(climb.get("stage", "expand")))


def rung(lower: int) -> list[Stage]:
    """The stages from `lower` to `lower + 1` (components/climb.py `RUNGS`)."""
    upper = lower + 1
    spec = RUNGS[lower]
    what = {
        "expand": f"the new tier beside the old; {spec.moves}",
        "switch": "the service onto the new tier, the old kept",
        "contract": "the old tier retired" if len(spec.stages) > 1 else spec.moves,
    }
    return [
        Stage(
            f"{lower} -> {upper}, {stage}: {what[stage]}",
            upper,
            _at(lower, stage),
            RETIRED.get(lower, frozenset()) if stage == "contract" else frozenset(),
        )
        for stage in spec.stages
    ]


def _at(lower: int, stage: str) -> dict[str, Any]:
    return {"from_phase": lower, "stage": stage}


def stages(at: Position, to: int) -> list[Stage]:
    """What is left to climb from `at` to phase `to`; Refused, saying why, when it must not climb."""
    if not 1 <= to <= LAST_PHASE:
        raise Refused(f"--to: got {to}, allowed: a phase from 1 to {LAST_PHASE}")
    if at.from_phase:
        if to != at.phase:
            raise Refused(
                f"--to: got {to}, but the stack is {at}; finish that rung first (--to {at.phase}), "
                "running the command again resumes it"
            )
        reached = STAGES.index(at.stage)
        return [stage for stage in rung(at.from_phase) if STAGES.index(stage.climb["stage"]) >= reached]
    if to < at.phase:
        raise Refused(
            f"--to: got {to}, but the stack is {at}: going down a rung is refused (its data lives in "
            f"phase {at.phase}'s tiers and nothing copies it back down); deploy a new stack to start lower"
        )
    if to == at.phase:
        return []
    if to > at.phase + 1:
        raise Refused(f"--to: got {to}, but the stack is {at}: one rung at a time, --to {at.phase + 1} first")
    return rung(at.phase)


@dataclass(frozen=True)
class Plan:
    """A preview's steps as `Kind/name` sets by what the engine would do."""

    created: frozenset[str]
    updated: frozenset[str]
    deleted: frozenset[str]
    replaced: frozenset[str]


def planned(preview: Mapping[str, Any]) -> Plan:
    """From `pulumi preview --json`: Kubernetes objects as `Kind/name`, other resources by type and name."""
    found: dict[str, set[str]] = {"create": set(), "update": set(), "delete": set(), "replace": set()}
    for step in preview.get("steps", []):
        op = "replace" if step["op"] in REPLACING else OPS.get(step["op"])
        if op is None:  # same, read, refresh: nothing changes on the cluster
            continue
        state = step.get("newState") or step["oldState"]
        inputs = state.get("inputs", {})
        if "kind" in inputs:
            name = f"{inputs['kind']}/{inputs['metadata']['name']}"
        else:
            name = f"{state['type']}/{step['urn'].rpartition('::')[2]}"
        found[op].add(name)
    return Plan(*(frozenset(found[op]) for op in ("create", "update", "delete", "replace")))


def guard(stage: Stage, plan: Plan) -> None:
    """Refuse a stage whose plan would lose data: a data holder replaced, or deleted but not retired."""
    holders = {name for name in plan.replaced | plan.deleted if name.partition("/")[0] in DATA_HOLDERS}
    replaced = sorted(holders & plan.replaced)
    deleted = sorted(holders & plan.deleted - stage.retires)
    if replaced or deleted:
        raise Refused(
            f"{stage.description}: the engine would replace {replaced or 'nothing'} and delete "
            f"{deleted or 'nothing'} that holds data; allowed at this stage: "
            f"deleting {sorted(stage.retires) or 'nothing'}. Nothing was changed"
        )


def summary(plan: Plan) -> str:
    lines = []
    for label, names in (
        ("create", plan.created),
        ("update", plan.updated),
        ("delete", plan.deleted),
        ("replace", plan.replaced),
    ):
        if names:
            lines.append(f"  {label} {len(names)}: {', '.join(sorted(names))}")
    return "\n".join(lines) or "  no changes"


def write_settings(path: Path, phase: int, climb: Mapping[str, Any]) -> None:
    """`phase` and the climb's settings (none: removed) into the stack's generated file, the rest kept."""
    document = yaml.safe_load(path.read_text()) or {}
    config = document.setdefault("config", {})
    config[PHASE_KEY] = phase
    if climb:
        config[CLIMB_KEY] = dict(climb)
    else:
        config.pop(CLIMB_KEY, None)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def climb(ctx: Context, env: Mapping[str, str], stack: str, to: int, out: TextIO) -> list[tuple[Stage, Plan]]:
    """Climb `stack` to phase `to`, stage by stage; returns each stage run with the plan it applied.
    Refused or StageFailed stops it where it is, the old tier serving."""
    path = ctx.workspace.stack_file(stack)
    if not path.exists():
        raise Refused(f"--stack: got {stack!r}, but there is no {path}: deploy the stack first")
    at = position((yaml.safe_load(path.read_text()) or {}).get("config") or {})
    todo = stages(at, to)
    done: list[tuple[Stage, Plan]] = []
    if not todo:
        out.write(f"stack {stack} is already at phase {to}\n")
    for stage in todo:
        out.write(f"== {stage.description}\n")
        previous = path.read_text()
        write_settings(path, stage.phase, stage.climb)
        try:
            plan = planned(json.loads(pulumi(ctx, env, stack, path, "preview", "--json", "--refresh").stdout))
            guard(stage, plan)
        except (Refused, StageFailed):
            path.write_text(previous)  # the stack stays where it was
            raise
        out.write(summary(plan) + "\n")
        out.write(pulumi(ctx, env, stack, path, "up", "--yes", "--skip-preview", "--refresh").stdout[-2000:])
        done.append((stage, plan))
    if todo:
        write_settings(path, to, {})  # the plain upper rung, which the contract stage deployed
    return done


def pulumi(
    ctx: Context, env: Mapping[str, str], stack: str, config: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """`pulumi ARGS` on `stack` with its generated file, unattended; StageFailed with its output."""
    argv = [*ctx.pulumi, *args, "--stack", stack, "--config-file", str(config), "--non-interactive"]
    done = subprocess.run(
        argv, env={**env, **ctx.pulumi_env}, cwd=ctx.root, capture_output=True, text=True, check=False, timeout=3600
    )
    if done.returncode != 0:
        raise StageFailed(argv, done.returncode, done.stdout + done.stderr)
    return done
