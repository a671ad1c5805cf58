"""Strict schema validation: every stack is valid on every supported Kubernetes version."""

from __future__ import annotations

import copy

import pytest

from components import cli, validation

STACKS = cli.stack_names(cli.STACKS)


@pytest.mark.parametrize("name", STACKS)
def test_every_object_of_every_stack_is_valid(name: str) -> None:
    objects = cli.load_stack(name).objects()
    assert validation.problems(objects) == []


def deployment() -> dict:
    return copy.deepcopy(next(o for o in cli.load_stack("phase2").objects() if o["kind"] == "Deployment"))


def test_a_misspelled_field_is_an_error() -> None:
    broken = deployment()
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    problems = validation.problems([broken], ["1.34.0"])
    assert len(problems) == 1
    assert problems[0].startswith("Deployment/web (1.34.0): spec.template.spec.containers.0: Additional properties")
    assert "'readinesProbe' was unexpected" in problems[0]


def test_a_wrong_type_is_an_error() -> None:
    broken = deployment()
    broken["spec"]["revisionHistoryLimit"] = "five"
    assert validation.problems([broken], ["1.34.0"]) == [
        "Deployment/web (1.34.0): spec.revisionHistoryLimit: 'five' is not of type 'integer', 'null'"
    ]


def test_custom_resources_are_listed_not_validated() -> None:
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"}}
    assert validation.problems([route]) == []
    assert validation.custom_kinds([route, deployment()]) == ["gateway.networking.k8s.io/v1/HTTPRoute"]
