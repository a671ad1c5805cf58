"""The CrossGuard policies, called the way the Pulumi engine calls them (no CLI, no server)."""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from components import cli
from policies import pack
from policies.pulumi_objects import UNKNOWN, api_version, phase_from_urn, to_object
from policies.rules import RULES
from tests.policy.objects import deployment

OPTIONS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def _props(obj: dict[str, Any]) -> Any:
    """What the engine hands a policy: the inputs without apiVersion/kind, behind the unknown-checking proxy."""
    return unknown_checking_proxy({k: v for k, v in obj.items() if k not in ("apiVersion", "kind")})


def _policy(rule_id: str) -> Any:
    return next(p for p in pack.policies() if p.name == rule_id)


def test_one_policy_per_rule_with_its_level() -> None:
    policies = pack.policies()
    assert [p.name for p in policies] == [rule.id for rule in RULES]
    assert {p.name: p.enforcement_level.value for p in policies if p.enforcement_level} == {
        rule.id: rule.level for rule in RULES
    }
    assert {type(p) for p in policies} == {ResourceValidationPolicy, StackValidationPolicy}


def test_resource_types_map_back_to_api_versions() -> None:
    assert api_version(DEPLOYMENT) == ("apps/v1", "Deployment")
    assert api_version("kubernetes:core/v1:Service") == ("v1", "Service")
    assert api_version("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute") == (
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
    )
    assert api_version("kubernetes:helm.sh/v3:Release") is None
    assert api_version("scaleladder:index:AutoscaledService") is None


def test_unknown_values_do_not_abort_the_check() -> None:
    secret = {"metadata": {"name": "creds"}, "stringData": {"password": UNKNOWN_STRING_VALUE}}
    assert to_object("kubernetes:core/v1:Secret", unknown_checking_proxy(secret)) == {
        "metadata": {"name": "creds"},
        "stringData": {"password": UNKNOWN},
        "apiVersion": "v1",
        "kind": "Secret",
    }


def test_a_resource_policy_reports_the_rule_message() -> None:
    reported: list[tuple[str, str | None]] = []
    broken = deployment()
    broken["spec"]["template"]["spec"]["containers"][0]["image"] = "example/app:latest"
    args = ResourceValidationArgs(DEPLOYMENT, _props(broken), "urn:pulumi:phase3::scaleladder::x", "app", OPTIONS, None)
    _policy("pinned-image").validate(args, lambda message, urn: reported.append((message, urn)))
    assert [m for m, _ in reported] == [
        "Deployment/app: container app image 'example/app:latest' (spec.template.spec.containers[0].image) uses the "
        "moving tag `latest`; fix: pin an explicit version, e.g. example/app:1.2.3 or @sha256:<digest>"
    ]
    reported.clear()
    args = ResourceValidationArgs(DEPLOYMENT, _props(deployment()), "urn:x", "app", OPTIONS, None)
    _policy("pinned-image").validate(args, lambda message, urn: reported.append((message, urn)))
    assert reported == []


def _resources(stack: str, objects: list[dict[str, Any]]) -> list[PolicyResource]:
    return [
        PolicyResource(
            f"kubernetes:{'core/v1' if o['apiVersion'] == 'v1' else o['apiVersion']}:{o['kind']}",
            _props(o),
            f"urn:pulumi:{stack}::scaleladder::{o['kind']}::{o['metadata']['name']}",
            o["metadata"]["name"],
            OPTIONS,
            None,
            None,
            [],
            {},
        )
        for o in objects
    ]


def test_stack_policies_see_the_phase_and_report_against_the_resource() -> None:
    assert phase_from_urn("urn:pulumi:phase3::scaleladder::kubernetes:apps/v1:Deployment::web") == 3
    assert phase_from_urn("urn:pulumi:kind::scaleladder::x::y") is None
    objects = cli.load_stack("phase3").objects()
    for rule in (r for r in RULES if r.stack_check):
        reported: list[tuple[str, str | None]] = []
        args = StackValidationArgs(_resources("phase3", objects))
        _policy(rule.id).validate(args, lambda message, urn, found=reported: found.append((message, urn)))
        assert reported == [], rule.id
    without_hpa = [o for o in objects if o["kind"] != "HorizontalPodAutoscaler"]
    reported = []
    _policy("phase-autoscaled-web").validate(
        StackValidationArgs(_resources("phase3", without_hpa)), lambda message, urn: reported.append((message, urn))
    )
    assert reported == [
        (
            "phase 3 stack: Deployment/web serves the web tier but is not the scaleTargetRef of any "
            "HorizontalPodAutoscaler or ScaledObject; fix: enable web.autoscaling (phase 3 and up scale the web tier "
            "horizontally)",
            "urn:pulumi:phase3::scaleladder::Namespace::scaleladder-phase3",
        )
    ]


def _floats(value: Any) -> Any:
    """`value` with every integer a float: the engine hands numbers over as protobuf doubles."""
    if isinstance(value, dict):
        return {key: _floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_floats(item) for item in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def test_resource_policies_take_numbers_as_the_engine_sends_them() -> None:
    """Every object rule over every object of phase 6, each number a float: nothing reported, nothing raised;
    a low uid is still reported, as the integer it is."""
    for rule in (r for r in RULES if r.object_check):
        for obj in cli.load_stack("phase6").objects():
            resource = f"kubernetes:{'core/v1' if obj['apiVersion'] == 'v1' else obj['apiVersion']}:{obj['kind']}"
            args = ResourceValidationArgs(resource, _props(_floats(obj)), "urn:x", "x", OPTIONS, None)
            reported: list[str] = []
            _policy(rule.id).validate(args, lambda message, urn, found=reported: found.append(message))
            assert reported == [], (rule.id, obj["kind"], obj["metadata"]["name"])
    low = deployment()
    low["spec"]["template"]["spec"]["securityContext"]["fsGroup"] = 999
    reported = []
    args = ResourceValidationArgs(DEPLOYMENT, _props(_floats(low)), "urn:x", "app", OPTIONS, None)
    _policy("high-ids").validate(args, lambda message, urn: reported.append(message))
    assert [m.split(";")[0] for m in reported] == [
        "Deployment/app: spec.template.spec.securityContext.fsGroup is 999, below 10000"
    ]
