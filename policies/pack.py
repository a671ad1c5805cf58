"""The CrossGuard policies: one per rule, object rules per resource and stack rules per stack.

Importable without side effects (tests build and call these policies); `__main__` hands them to
`PolicyPack`, which starts the analyzer server Pulumi talks to.
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies.model import Rule
from policies.pulumi_objects import phase_from_urn, to_object
from policies.rules import RULES, excepted, violations

LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}


def _resource_policy(rule: Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        obj = to_object(args.resource_type, args.props)
        if obj is None:
            return
        for violation in violations(rule, [obj], None):
            report(violation.message, None)

    return ResourceValidationPolicy(rule.id, rule.description, validate, LEVELS[rule.level])


def _stack_policy(rule: Rule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources: list[tuple[Any, dict[str, Any]]] = []
        for resource in args.resources:
            obj = to_object(resource.resource_type, resource.props)
            if obj is not None:
                resources.append((resource, obj))
        if not resources:
            return
        urns = {id(obj): resource.urn for resource, obj in resources}
        phase = phase_from_urn(resources[0][0].urn)
        objects = [obj for _, obj in resources]
        for obj, message in rule.findings(objects, phase):
            if rule.id == "policy-exception" or not excepted(obj, rule.id):
                report(message, urns.get(id(obj)))

    return StackValidationPolicy(rule.id, rule.description, validate, LEVELS[rule.level])


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    return [_resource_policy(rule) if rule.object_check else _stack_policy(rule) for rule in RULES]
