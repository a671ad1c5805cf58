"""Climbing one running stack up the ladder in place, one rung at a time, expand then contract.

A rung climbs in up to three `pulumi up`s, the stack's config telling the kit which stage it is in
(`scaleladder:climb`, set by `scaleladder-local climb`; each rung's stages are in `RUNGS`):

1. `expand`: the upper rung's new data tier is created beside the lower rung's, which keeps
   serving; a Job (`sample climb <action>`) copies the data and verifies it, freezing writes on the
   old tier where the copy needs it (2 -> 3: postgres-0 alone restarts under Patroni, no Job);
2. `switch`: the service rolls onto the new tier; the old tier is kept, still holding its data, and
   a second Job finishes the move where one is needed;
3. `contract`: the plain upper rung; only now does the engine delete the old tier.

5 -> 6 moves no data: its only stage is contract. Going down a rung is never planned
(components/local/climb.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from components import pods
from components.labels import Meta
from components.settings import setting
from components.web import RUN_AS, TMP_VOLUME, WebSpec, migrate_container

NAME = "climb"

STAGES = ("expand", "switch", "contract")


@dataclass(frozen=True)
class ClimbSpec:
    """Where a stack is on its climb from rung `from_phase` to `phase`; set by `scaleladder-local climb`."""

    from_phase: int = setting(
        0, "the rung this stack is climbing from, one below `phase`; 0: not climbing", minimum=0, maximum=5
    )
    stage: Literal["expand", "switch", "contract"] = setting(
        "expand",
        "expand: the new data tier beside the old, which serves while a Job copies and verifies; "
        "switch: the service on the new tier, the old one kept with its data; "
        "contract: the plain upper rung, the old tier deleted",
    )

    @property
    def transitional(self) -> bool:
        """Whether the stack renders both rungs (expand, switch) rather than the plain upper one."""
        return bool(self.from_phase) and self.stage != "contract"


@dataclass(frozen=True)
class Rung:
    """Climbing from `lower` to `lower + 1`: its stages, and what its Jobs copy with which action."""

    lower: int
    stages: tuple[str, ...]
    moves: str
    action: str = ""
    """The `sample climb` action of the expand stage's Job (empty: no Job)."""
    finish: tuple[str, ...] = ()
    """Arguments of a second run of the action after the switch (empty: none)."""


RUNGS = {
    rung.lower: rung
    for rung in (
        Rung(1, STAGES, "the database, from the web pod's volume into the Postgres StatefulSet", "copy-database"),
        Rung(
            2,
            ("expand", "contract"),
            "nothing: postgres-0 restarts under Patroni on its own data, alone, before the replicas join",
        ),
        Rung(
            3,
            STAGES,
            "sessions and rate-limit state, from the standalone Redis into the Redis Cluster",
            "move-sessions",
            ("--final",),
        ),
        Rung(
            4,
            STAGES,
            "users, orders and order items, from the main group into the shard groups",
            "adopt-shards",
            ("--finish",),
        ),
        Rung(5, ("contract",), "nothing: the roles serve before the web tier is deleted"),
    )
}


def problems(spec: ClimbSpec, phase: int) -> list[tuple[str, str]]:
    """A climb is from the rung just below, at a stage that rung has."""
    if not spec.from_phase:
        return []
    if spec.from_phase != phase - 1:
        return [("climb.from_phase", f"must be phase - 1 = {phase - 1} (one rung at a time), got {spec.from_phase}")]
    stages = RUNGS[spec.from_phase].stages
    if spec.stage not in stages:
        allowed = ", ".join(repr(stage) for stage in stages)
        return [("climb.stage", f"rung {spec.from_phase} -> {phase} has the stages {allowed}, got {spec.stage!r}")]
    return []


def job(
    meta: Meta, web_spec: WebSpec, env: list[dict[str, Any]], rung: Rung, *, finish: bool = False
) -> dict[str, Any]:
    """A Job `climb-<action>[-<finish>]-<digest>` running `sample climb <action>` in the service image.

    `env` is the upper rung's migration env (the primaries themselves: a copy holds session locks
    and freezes writes, which a transaction pooler would not carry) plus the old tier's address
    (`source_env`), so the NetworkPolicies derived from it let the Job reach both tiers. A copy is
    safe to run again after a crash at any step, so a failed pod is retried a few times.
    """
    args = rung.finish if finish else ()
    container = {**migrate_container(web_spec, env), "name": "climb"}
    container["args"] = ["climb", rung.action, *args]
    task = "-".join([rung.action, *(arg.lstrip("-") for arg in args)])
    return pods.job(
        meta,
        NAME,
        task,
        component=NAME,
        user=RUN_AS,
        containers=[container],
        volumes=[TMP_VOLUME],
        backoff_limit=3,
        deadline_seconds=1800,
    )


def source_env(rung: Rung, old_env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The old tier's URL, from the env the lower rung gives its service, as CLIMB_SOURCE_<...>_URL.

    Its password is the new tier's (DATABASE_PASSWORD_FILE, REDIS_PASSWORD_FILE): both rungs share
    one Secret per store."""
    variable = "REDIS_URL" if rung.action == "move-sessions" else "DATABASE_URL"
    [url] = [item["value"] for item in old_env if item["name"] == variable]
    return [{"name": f"CLIMB_SOURCE_{variable}", "value": url}]
