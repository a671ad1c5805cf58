"""Exceptions are explicit: an annotation naming the rule, honoured only with a reason."""

from __future__ import annotations

from policies.model import EXCEPTION_PREFIX
from policies.rules import evaluate
from tests.policy.objects import changed, deployment, stack

WRITABLE = changed(deployment(), "spec.template.spec.containers.0.securityContext.readOnlyRootFilesystem", False)


def _annotated(value: str, rule: str = "read-only-root") -> dict[str, object]:
    return changed(WRITABLE, "metadata.annotations", {f"{EXCEPTION_PREFIX}{rule}": value})


def test_an_exception_with_a_reason_is_honoured() -> None:
    assert evaluate(stack(_annotated("the image rewrites its config at start-up")), None) == []


def test_an_exception_without_a_reason_is_not() -> None:
    assert [v.rule for v in evaluate(stack(_annotated("  ")), None)] == ["read-only-root", "policy-exception"]


def test_an_exception_for_no_rule_is_reported() -> None:
    objects = stack(_annotated("why", rule="read-only-rootfs"))
    found = [v.message for v in evaluate(objects, None) if v.rule != "read-only-root"]
    assert len(found) == 1
    assert found[0].startswith(
        "Deployment/app: metadata.annotations[scaleladder.io/policy-exception.read-only-rootfs] names no rule; "
        "fix: use one of high-ids, hpa-target, network-allows,"
    )


def test_an_exception_covers_only_its_rule() -> None:
    both = changed(_annotated("needs it"), "spec.template.spec.containers.0.image", "example/app:latest")
    assert [v.rule for v in evaluate(stack(both), None)] == ["pinned-image"]
