"""The whole Pulumi program under mocks, per stack: types, names, parents, dependencies, outputs.

`__main__.py` itself runs, against a mock engine that records every registration the way the
real engine would receive it (type, name, parent URN, dependencies).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import mocks, set_all_config

from components import cli
from components.stack import Secrets, build

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "kubernetes:core/v1:Namespace"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
STACKS = cli.stack_names(cli.STACKS)


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    parent: str
    dependencies: list[str]
    inputs: dict[str, Any]


class RecordingMonitor(mocks.MockMonitor):
    """The SDK's mock monitor, also keeping what each registration said about parents and deps."""

    def __init__(self, mock: mocks.Mocks) -> None:
        super().__init__(mock)
        self.registrations: list[Registration] = []
        self.stack_outputs: dict[str, Any] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = mocks.rpc.deserialize_properties(request.object)
            self.registrations.append(
                Registration(
                    response.urn, request.type, request.name, request.parent, list(request.dependencies), inputs
                )
            )
        return response


PASSWORD_TYPE = "pulumi-python:dynamic/scaleladder:GeneratedPassword"


class EchoMocks(mocks.Mocks):
    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ == PASSWORD_TYPE:
            outputs["result"] = f"mock-password-{args.name}"
        return f"{args.name}-id", outputs

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def fresh_event_loop() -> None:
    """The mocks run on the current event loop; an earlier test's asyncio.run() may have closed it."""
    asyncio.set_event_loop(asyncio.new_event_loop())


def run_program(stack: str) -> RecordingMonitor:
    fresh_event_loop()
    monitor = RecordingMonitor(EchoMocks())
    mocks.set_mocks(EchoMocks(), project="scaleladder", stack=stack, preview=False, monitor=monitor)
    document = yaml.safe_load((cli.STACKS / f"Pulumi.{stack}.yaml").read_text())
    # the engine hands every value over as a string, objects and numbers JSON-encoded
    set_all_config(
        {key: value if isinstance(value, str) else json.dumps(value) for key, value in document["config"].items()}
    )

    root = pulumi.runtime.get_root_resource()
    root.outputs.clear()  # type: ignore[union-attr] # the mock root stack outlives one program run

    @pulumi.runtime.test  # type: ignore[misc]
    def main() -> pulumi.Output[None]:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        return pulumi.Output.from_input(root.outputs).apply(monitor.stack_outputs.update)  # type: ignore[union-attr]

    main()
    return monitor


@pytest.fixture(scope="module", params=STACKS)
def deployed(request: pytest.FixtureRequest) -> tuple[str, RecordingMonitor]:
    return request.param, run_program(request.param)


def test_every_object_becomes_one_typed_resource_under_its_part(deployed: tuple[str, RecordingMonitor]) -> None:
    name, monitor = deployed
    stack = build(name, cli.load_stack(name).config, Secrets.development())
    registered = {
        (r.type.split(":")[-1], r.inputs["metadata"]["name"])
        for r in monitor.registrations
        if r.type.startswith("kubernetes:") and r.type != HELM_RELEASE
    }
    expected = {(obj["kind"], obj["metadata"]["name"]) for obj in stack.objects()}
    assert registered == expected
    components = {r.name: r for r in monitor.registrations if r.type.startswith("scaleladder:index:")}
    # registrations are asynchronous: their order is not the program's
    assert sorted((r.name, r.type) for r in components.values()) == sorted(
        (part.name, f"scaleladder:index:{part.component}") for part in stack.parts
    )
    for registration in monitor.registrations:
        if registration.type.startswith("kubernetes:") and registration.type not in (NAMESPACE, HELM_RELEASE):
            assert registration.parent.split("::")[-1] in components, registration.urn


def test_helm_releases_are_pinned_and_installed_in_order_before_the_parts(
    deployed: tuple[str, RecordingMonitor],
) -> None:
    name, monitor = deployed
    stack = cli.load_stack(name)
    releases = [r for r in monitor.registrations if r.type == HELM_RELEASE]
    assert [(r.inputs["name"], r.inputs["version"]) for r in releases] == [
        (release.name, release.version) for release in stack.releases
    ]
    for before, after in itertools.pairwise(releases):
        assert before.urn in after.dependencies
    for component in (r for r in monitor.registrations if r.type.startswith("scaleladder:index:")):
        assert {r.urn for r in releases} <= set(component.dependencies)


def test_urns_are_unique(deployed: tuple[str, RecordingMonitor]) -> None:
    _, monitor = deployed
    urns = [r.urn for r in monitor.registrations]
    assert len(urns) == len(set(urns))


def test_parts_wait_for_the_namespace_and_their_dependencies(deployed: tuple[str, RecordingMonitor]) -> None:
    """Depending on a component means waiting for every resource in it (the SDK expands it)."""
    name, monitor = deployed
    stack = build(name, cli.load_stack(name).config, Secrets.development())
    component_urn = {r.name: r.urn for r in monitor.registrations if r.type.startswith("scaleladder:index:")}
    namespace_urn = next(r.urn for r in monitor.registrations if r.type == NAMESPACE)
    for part in stack.parts:
        dependencies = set(next(r for r in monitor.registrations if r.urn == component_urn[part.name]).dependencies)
        assert namespace_urn in dependencies
        for dependency in part.depends_on:
            children = {r.urn for r in monitor.registrations if r.parent == component_urn[dependency]}
            assert children and children <= dependencies, (part.name, dependency)


def test_configuration_is_created_before_the_workloads_that_read_it(deployed: tuple[str, RecordingMonitor]) -> None:
    _, monitor = deployed
    by_urn = {r.urn: r for r in monitor.registrations}
    for registration in monitor.registrations:
        if registration.type in ("kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:Deployment"):
            siblings = [r for r in monitor.registrations if r.parent == registration.parent]
            secrets = {
                r.urn for r in siblings if r.type in ("kubernetes:core/v1:Secret", "kubernetes:core/v1:ConfigMap")
            }
            assert secrets <= set(registration.dependencies), by_urn[registration.urn].name


def test_passwords_are_generated_secrets_never_development_values(deployed: tuple[str, RecordingMonitor]) -> None:
    name, monitor = deployed
    passwords = [r for r in monitor.registrations if r.type == PASSWORD_TYPE]
    secrets = [r for r in monitor.registrations if r.type == "kubernetes:core/v1:Secret"]
    # one generated password per purpose the stack has (the cluster layer has none)
    assert bool(passwords) == bool(secrets), name
    assert all(r.inputs["length"] >= 32 for r in passwords)
    assert len({r.name for r in passwords}) == len(passwords)
    for registration in monitor.registrations:
        assert "dev-only-not-a-secret" not in repr(registration.inputs)


def test_outputs_are_exported(deployed: tuple[str, RecordingMonitor]) -> None:
    name, monitor = deployed
    assert monitor.stack_outputs == cli.load_stack(name).outputs
    if cli.load_stack(name).config.layer == "phase":
        front = "catalog" if name == "phase6" else "web"  # phase 6: `/` goes to the catalog role
        assert monitor.stack_outputs["web_url"] == f"http://{front}.scaleladder-{name}.svc.cluster.local:80"
    else:
        assert monitor.stack_outputs["gateway"] == "scaleladder-gateway/edge"


def test_nested_fields_reach_the_engine_in_kubernetes_spelling(deployed: tuple[str, RecordingMonitor]) -> None:
    _, monitor = deployed
    secrets = [r for r in monitor.registrations if r.type == "kubernetes:core/v1:Secret"]
    assert all("stringData" in r.inputs for r in secrets)
    for workload in (r for r in monitor.registrations if r.type == "kubernetes:apps/v1:Deployment"):
        pod = workload.inputs["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert "readinessProbe" in pod["containers"][0]


def test_config_errors_stop_the_program_with_every_problem() -> None:
    fresh_event_loop()
    monitor = RecordingMonitor(EchoMocks())
    mocks.set_mocks(EchoMocks(), project="scaleladder", stack="broken", preview=False, monitor=monitor)
    set_all_config({"scaleladder:phase": "8", "scaleladder:web": '{"replicas": 0}'})

    @pulumi.runtime.test  # type: ignore[misc]
    def main() -> None:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    with pytest.raises(pulumi.RunError) as caught:
        main()
    assert str(caught.value) == (
        "stack broken: 2 configuration problem(s):\n"
        "  scaleladder:phase: must be <= 6, got 8\n"
        "  scaleladder:web.replicas: must be >= 1, got 0"
    )
