"""`scaleladder check STACK`: every policy rule plus strict schema validation on a rendered stack.

No Pulumi CLI and no cluster: the same objects `render` writes are checked by the same rule
functions the CrossGuard pack runs. Exit code 0: clean; 1: violations (advisory ones included,
so the stacks stay clean); configuration errors are the CLI's (2).
"""

from __future__ import annotations

import sys
from typing import TextIO

from components import validation
from components.stack import Stack
from policies.model import Violation
from policies.rules import RULES, evaluate


def phase_of(stack: Stack) -> int | None:
    """The stack's rung of the ladder; None for the cluster layer."""
    return stack.config.phase if stack.config.layer == "phase" else None


def check(stack: Stack) -> list[Violation]:
    """Rule violations, then schema problems (as violations of the mandatory rule `schema`)."""
    objects = stack.objects()
    found = evaluate(objects, phase_of(stack))
    found += [Violation("schema", "mandatory", "", problem) for problem in validation.problems(objects)]
    return found


def report(stack: Stack, out: TextIO | None = None) -> int:
    """Print the violations and a summary line (to stdout by default); the exit code for the command."""
    out = out or sys.stdout
    found = check(stack)
    for violation in found:
        print(violation, file=out)
    mandatory = sum(v.level == "mandatory" for v in found)
    print(
        f"{stack.name}: {len(stack.objects())} objects, {len(RULES)} rules + schema: "
        f"{mandatory} mandatory, {len(found) - mandatory} advisory violation(s)",
        file=out,
    )
    return 1 if found else 0
