"""Climbing in place, as data: the settings, what each stage renders, and the orchestrator's rules."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import ConfigError, from_values
from components.local import climb as orchestrator
from components.local.climb import Plan, Position, Refused, guard, planned, position, stages
from components.local.workspace import stack_document
from components.stack import Secrets, Stack, build

TRANSITIONS = [(1, "expand"), (1, "switch"), (2, "expand"), (3, "expand"), (3, "switch"), (4, "expand"), (4, "switch")]


def climbing(lower: int, stage: str) -> Stack:
    return build(
        "c", from_values({"phase": lower + 1, "climb": {"from_phase": lower, "stage": stage}}), Secrets.development()
    )


def names(stack: Stack, part: str | None = None) -> set[str]:
    return {
        f"{obj['kind']}/{obj['metadata']['name']}"
        for each in stack.parts
        if part is None or each.name == part
        for obj in each.objects
    }


def env_of(obj: dict[str, Any]) -> dict[str, str]:
    [container] = obj["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", "") for item in container["env"]}


def climb_job(stack: Stack) -> dict[str, Any]:
    [part] = [part for part in stack.parts if part.name == "climb"]
    [job] = part.objects
    return job


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"phase": 3, "climb": {"from_phase": 1}},
            "scaleladder:climb.from_phase: must be phase - 1 = 2 (one rung at a time), got 1",
        ),
        (
            {"phase": 3, "climb": {"from_phase": 2, "stage": "switch"}},
            "scaleladder:climb.stage: rung 2 -> 3 has the stages 'expand', 'contract', got 'switch'",
        ),
        (
            {"phase": 6, "climb": {"from_phase": 5, "stage": "expand"}},
            "scaleladder:climb.stage: rung 5 -> 6 has the stages 'contract', got 'expand'",
        ),
        (
            {"phase": 2, "climb": {"from_phase": 1, "stage": "copy"}},
            "scaleladder:climb.stage: must be one of 'expand', 'switch', 'contract', got 'copy'",
        ),
        ({"phase": 2, "climb": {"from_phase": 6}}, "scaleladder:climb.from_phase: must be <= 5, got 6"),
    ],
)
def test_a_climb_setting_out_of_place_is_named_with_its_value_and_rule(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        from_values(values)
    assert [str(problem) for problem in error.value.problems] == [message]


@pytest.mark.parametrize(("lower", "stage"), TRANSITIONS)
def test_both_rungs_render_side_by_side_without_a_name_twice(lower: int, stage: str) -> None:
    stack = climbing(lower, stage)
    counted = Counter(f"{obj['kind']}/{obj['metadata']['name']}" for obj in stack.objects())
    assert [name for name, count in counted.items() if count > 1] == []
    assert stack.outputs["climb"] == {"from_phase": lower, "stage": stage}
    # every part a part depends on comes before it (the program creates them in this order)
    seen: set[str] = set()
    for part in stack.parts:
        assert set(part.depends_on) <= seen, part.name
        seen.add(part.name)


def test_expanding_from_one_server_copies_from_its_pod_while_it_serves() -> None:
    stack = climbing(1, "expand")
    one_machine = build("c", from_values({"phase": 1}), Secrets.development())
    # the one pod serves as it did on phase 1, byte for byte; the new group and its migrations beside it
    assert [obj for obj in stack.objects() if obj["kind"] == "Deployment"] == [
        obj for obj in one_machine.objects() if obj["kind"] == "Deployment"
    ]
    assert {"StatefulSet/postgres", "PersistentVolumeClaim/web-pgdata"} <= names(stack)
    assert [name for name in names(stack, "migrations") if name.startswith("Job/web-migrate-")]
    job = climb_job(stack)
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["climb", "copy-database"]
    assert env_of(job)["DATABASE_URL"] == "postgresql://app@postgres-rw:5432/app"
    assert env_of(job)["CLIMB_SOURCE_DATABASE_URL"] == "postgresql://app@web-db:5432/app"
    [part] = [part for part in stack.parts if part.name == "climb"]
    assert {"postgres", "migrations", "server"} <= set(part.depends_on)
    # only the copy Job may reach the pod's Postgres
    [ingress] = [o for o in stack.objects() if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "web-ingress"]
    [rule] = ingress["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "climb-copy-database"
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]


def test_switching_from_one_server_keeps_its_volume_and_nothing_else_of_it() -> None:
    stack = climbing(1, "switch")
    assert names(stack, "server") == {"PersistentVolumeClaim/web-pgdata"}
    plain = build("c", from_values({"phase": 2}), Secrets.development())
    assert names(stack) - names(plain) == {"PersistentVolumeClaim/web-pgdata"}
    assert "climb" not in {part.name for part in stack.parts}  # the copy needs no second run


def test_contract_is_the_plain_upper_rung() -> None:
    for lower in range(1, 6):
        values = {"phase": lower + 1, "climb": {"from_phase": lower, "stage": "contract"}}
        contracted = build("c", from_values(values), Secrets.development())
        plain = build("c", from_values({"phase": lower + 1}), Secrets.development())
        assert contracted.objects() == plain.objects()
        assert "climb" not in contracted.outputs


def test_patroni_takes_over_postgres_0_alone_before_the_replicas_join() -> None:
    expand = climbing(2, "expand")
    [members] = [o for o in expand.objects() if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "postgres"]
    plain = build("c", from_values({"phase": 3}), Secrets.development())
    [grown] = [o for o in plain.objects() if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "postgres"]
    assert (members["spec"]["replicas"], grown["spec"]["replicas"]) == (1, 3)
    assert {**members["spec"], "replicas": 3} == grown["spec"]  # the same Patroni members otherwise
    # the phase-2 service keeps serving from the primary; no Job: nothing is copied
    [web] = [o for o in expand.objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "web"]
    assert env_of(web)["DATABASE_URL"] == "postgresql://app@postgres-rw:5432/app"
    assert "climb" not in {part.name for part in expand.parts}


def test_sessions_move_while_the_standalone_store_serves_then_after_the_switch() -> None:
    expand, switch = climbing(3, "expand"), climbing(3, "switch")
    for stack in (expand, switch):
        assert names(stack, "session-store") >= {"StatefulSet/session-store", "Service/session-store"}
        assert names(stack, "redis") >= {"StatefulSet/redis-shard-0", "Secret/redis-auth"}
    [web] = [o for o in expand.objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "web"]
    assert env_of(web)["REDIS_URL"] == "redis://session-store:6379/0"
    [web] = [o for o in switch.objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "web"]
    assert env_of(web)["REDIS_URL"] == "redis://redis:6379"
    first, final = climb_job(expand), climb_job(switch)
    for job in (first, final):
        assert env_of(job)["REDIS_URL"] == "redis://redis:6379"
        assert env_of(job)["CLIMB_SOURCE_REDIS_URL"] == "redis://session-store:6379/0"
    assert first["spec"]["template"]["spec"]["containers"][0]["args"] == ["climb", "move-sessions"]
    assert final["spec"]["template"]["spec"]["containers"][0]["args"] == ["climb", "move-sessions", "--final"]
    [part] = [part for part in switch.parts if part.name == "climb"]
    assert part.depends_on == ("web",)  # the final pass runs once every web pod is on the cluster


def test_users_move_into_the_shard_groups_while_the_unsharded_service_serves() -> None:
    expand, switch = climbing(4, "expand"), climbing(4, "switch")
    [web] = [o for o in expand.objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "web"]
    assert "SHARD_GROUPS" not in env_of(web)
    [web] = [o for o in switch.objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "web"]
    assert env_of(web)["SHARD_GROUPS"] == "pg-shard-0,pg-shard-1"
    job = climb_job(expand)
    assert env_of(job)["SHARD_GROUPS"] == "pg-shard-0,pg-shard-1"
    assert env_of(job)["DATABASE_URL"] == "postgresql://app@postgres-rw:5432/app"
    assert climb_job(switch)["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "climb",
        "adopt-shards",
        "--finish",
    ]


def test_the_stages_of_each_rung() -> None:
    assert [stage.climb["stage"] for stage in stages(Position(1), 2)] == ["expand", "switch", "contract"]
    assert [stage.climb["stage"] for stage in stages(Position(2), 3)] == ["expand", "contract"]
    assert [stage.climb for stage in stages(Position(5), 6)] == [{"from_phase": 5, "stage": "contract"}]
    assert [stage.retires for stage in stages(Position(3), 4)][-1] == {"StatefulSet/session-store"}
    assert [stage.climb["stage"] for stage in stages(Position(2, 1, "switch"), 2)] == ["switch", "contract"]
    assert stages(Position(4), 4) == []


@pytest.mark.parametrize(
    ("at", "to", "message"),
    [
        (
            Position(3),
            2,
            "--to: got 2, but the stack is at phase 3: going down a rung is refused (its data lives in phase 3's "
            "tiers and nothing copies it back down); deploy a new stack to start lower",
        ),
        (Position(1), 3, "--to: got 3, but the stack is at phase 1: one rung at a time, --to 2 first"),
        (
            Position(4, 3, "switch"),
            5,
            "--to: got 5, but the stack is climbing from phase 3 to 4, stage switch; finish that rung first "
            "(--to 4), running the command again resumes it",
        ),
        (Position(1), 7, "--to: got 7, allowed: a phase from 1 to 6"),
    ],
)
def test_going_down_skipping_or_leaving_a_rung_half_climbed_is_refused(at: Position, to: int, message: str) -> None:
    with pytest.raises(Refused) as refused:
        stages(at, to)
    assert str(refused.value) == message


def test_a_stage_that_would_delete_or_replace_data_is_refused() -> None:
    contract = stages(Position(1), 2)[-1]
    allowed = Plan(
        frozenset(), frozenset(), frozenset({"PersistentVolumeClaim/web-pgdata", "Deployment/x"}), frozenset()
    )
    guard(contract, allowed)
    expand = stages(Position(1), 2)[0]
    with pytest.raises(Refused) as refused:
        guard(expand, allowed)
    assert str(refused.value) == (
        f"{expand.description}: the engine would replace nothing and delete ['PersistentVolumeClaim/web-pgdata'] "
        "that holds data; allowed at this stage: deleting nothing. Nothing was changed"
    )
    replaced = Plan(frozenset(), frozenset(), frozenset(), frozenset({"StatefulSet/postgres", "Job/j"}))
    with pytest.raises(Refused, match=r"would replace \['StatefulSet/postgres'\]"):
        guard(contract, replaced)


def test_a_preview_is_read_as_objects_by_what_the_engine_would_do() -> None:
    def step(op: str, kind: str, name: str) -> dict[str, Any]:
        return {
            "op": op,
            "urn": f"urn::{name}",
            "newState": {"type": "t", "inputs": {"kind": kind, "metadata": {"name": name}}},
        }

    preview = {
        "steps": [
            step("same", "Service", "web"),
            step("refresh", "Service", "web"),
            step("create", "StatefulSet", "postgres"),
            step("update", "Deployment", "web"),
            step("create-replacement", "Job", "j"),
            {
                "op": "delete",
                "urn": "urn::web-pgdata",
                "oldState": {
                    "type": "t",
                    "inputs": {"kind": "PersistentVolumeClaim", "metadata": {"name": "web-pgdata"}},
                },
            },
            {
                "op": "create",
                "urn": "urn:pulumi:s::p::scaleladder:index:ClimbCopy::climb",
                "newState": {"type": "scaleladder:index:ClimbCopy"},
            },
        ]
    }
    assert planned(preview) == Plan(
        created=frozenset({"StatefulSet/postgres", "scaleladder:index:ClimbCopy/climb"}),
        updated=frozenset({"Deployment/web"}),
        deleted=frozenset({"PersistentVolumeClaim/web-pgdata"}),
        replaced=frozenset({"Job/j"}),
    )


def test_the_stage_reached_is_kept_in_the_stack_file_and_survives_its_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.phase1.yaml"
    path.write_text(
        yaml.safe_dump({"encryptionsalt": "s", "config": {"scaleladder:phase": 1, "kubernetes:context": "k"}})
    )
    orchestrator.write_settings(path, 2, {"from_phase": 1, "stage": "switch"})
    document = yaml.safe_load(path.read_text())
    assert position(document["config"]) == Position(2, 1, "switch")
    # `up` rewrites the file from the checked-in phase 1: the climb is kept, never undone
    rewritten = stack_document({"config": {"scaleladder:phase": 1}}, document, "k")
    assert position(rewritten["config"]) == Position(2, 1, "switch")
    orchestrator.write_settings(path, 2, {})
    rewritten = stack_document({"config": {"scaleladder:phase": 1}}, yaml.safe_load(path.read_text()), "k")
    assert position(rewritten["config"]) == Position(2)
    # Pulumi writes values back as strings
    assert position(
        {"scaleladder:phase": "4", "scaleladder:climb": '{"from_phase": 3, "stage": "expand"}'}
    ) == Position(4, 3, "expand")
