"""Every rule of the pack, with its enforcement level, and how they run over a list of objects.

`mandatory` rules guard what breaks production (unpinned images, missing limits, root, low uids,
secrets in the environment, budgets that block every drain, autoscaled workloads with fixed replicas, dangling
Services and routes, open networks); `advisory` rules are recommendations (labels, spread).

An object opts out of one rule with the annotation `scaleladder.io/policy-exception.<rule-id>`
whose value says why; an empty reason, or a rule id that does not exist, is itself a violation.
"""

from __future__ import annotations

from collections.abc import Iterator

from policies import availability, containers, labels, network, phases, references
from policies.model import EXCEPTION_PREFIX, Object, Rule, Violation, annotations_of, ref


def _exception_annotations(obj: Object) -> Iterator[str]:
    known = {rule.id for rule in RULES}
    for key, reason in annotations_of(obj).items():
        if not key.startswith(EXCEPTION_PREFIX):
            continue
        rule_id = key.removeprefix(EXCEPTION_PREFIX)
        if rule_id not in known:
            yield (
                f"{ref(obj)}: metadata.annotations[{key}] names no rule; fix: use one of "
                f"{', '.join(sorted(known - {'policy-exception'}))}"
            )
        elif not str(reason).strip():
            yield (
                f"{ref(obj)}: metadata.annotations[{key}] gives no reason, so the exception is not honoured; "
                "fix: say why the object needs it"
            )


RULES: tuple[Rule, ...] = (
    Rule(
        "pinned-image",
        "mandatory",
        "Images are pinned: an explicit tag that is not latest, or a digest.",
        object_check=containers.pinned_image,
    ),
    Rule(
        "resources",
        "mandatory",
        "Every container requests and is limited in CPU and memory.",
        object_check=containers.resources,
    ),
    Rule(
        "probes",
        "mandatory",
        "Serving containers have readiness and liveness probes, and they differ.",
        object_check=containers.probes,
    ),
    Rule(
        "startup-probe",
        "mandatory",
        "Containers that start slowly (StatefulSets, delayed liveness) have a startup probe.",
        object_check=containers.startup_probe,
    ),
    Rule(
        "non-root",
        "mandatory",
        "Containers run as a non-root user (runAsNonRoot, never uid 0).",
        object_check=containers.non_root,
    ),
    Rule(
        "no-privilege-escalation",
        "mandatory",
        "No privilege escalation, not privileged, every capability dropped.",
        object_check=containers.no_privilege_escalation,
    ),
    Rule(
        "read-only-root",
        "mandatory",
        "Root filesystems are read-only (exceptions must be annotated with a reason).",
        object_check=containers.read_only_root,
    ),
    Rule(
        "secret-env-literal",
        "mandatory",
        "No secret value is written into an env literal.",
        object_check=containers.secret_env_literal,
    ),
    Rule(
        "secret-file",
        "mandatory",
        "Secrets reach containers as read-only files (mode 0440 at most), never through the environment.",
        object_check=containers.secret_file,
    ),
    Rule(
        "high-ids",
        "mandatory",
        "Every container runs as a uid and gid of 10000 or more, and volumes belong to such a group.",
        object_check=containers.high_ids,
    ),
    Rule(
        "recommended-labels",
        "advisory",
        "Objects and pod templates carry the app.kubernetes.io labels.",
        object_check=labels.recommended_labels,
    ),
    Rule(
        "policy-exception",
        "mandatory",
        "Policy exception annotations name a rule and give a reason.",
        object_check=_exception_annotations,
    ),
    Rule(
        "pdb-required",
        "mandatory",
        "Every workload that can run more than one replica has a PodDisruptionBudget.",
        stack_check=availability.pdb_required,
    ),
    Rule(
        "pdb-consistent",
        "mandatory",
        "A PodDisruptionBudget selects a workload and lets at least one pod go at "
        "its minimum (HPA minReplicas or replicas).",
        stack_check=availability.pdb_consistent,
    ),
    Rule(
        "hpa-target",
        "mandatory",
        "An HPA's target exists in the stack and does not set spec.replicas.",
        stack_check=availability.hpa_target,
    ),
    Rule(
        "topology-spread",
        "advisory",
        "Multi-replica workloads spread their pods across nodes and zones.",
        stack_check=availability.topology_spread,
    ),
    Rule(
        "service-selects-workload",
        "mandatory",
        "Every Service selects the pods of a workload in the stack, and never a Job's pods.",
        stack_check=references.service_selects_workload,
    ),
    Rule(
        "route-backend-exists",
        "mandatory",
        "Every HTTPRoute and Ingress backend is a Service port in the stack.",
        stack_check=references.route_backend_exists,
    ),
    Rule(
        "network-default-deny",
        "mandatory",
        "A namespace with workloads denies all ingress and egress by default.",
        stack_check=network.network_default_deny,
    ),
    Rule(
        "network-allows",
        "mandatory",
        "NetworkPolicies admit exactly the connections the stack makes, plus DNS.",
        stack_check=network.network_allows,
    ),
    Rule(
        "phase-autoscaled-web",
        "mandatory",
        "Phase 3 and up: the web tier is behind an HPA.",
        stack_check=phases.web_autoscaled,
    ),
    Rule(
        "phase-redis-cluster",
        "mandatory",
        "Phase 4 and up: the cache is a Redis Cluster.",
        stack_check=phases.redis_cluster,
    ),
    Rule(
        "phase-edge-cache",
        "mandatory",
        "Phase 5 and up: the route goes through a Varnish edge cache.",
        stack_check=phases.edge_cache,
    ),
    Rule(
        "phase-queue",
        "mandatory",
        "Phase 6 and up: a NATS JetStream queue and Envoy circuit-breaker sidecars.",
        stack_check=phases.queue_and_breakers,
    ),
)


def excepted(obj: Object, rule_id: str) -> bool:
    """The object carries an exception for the rule, with a reason."""
    return bool(str(annotations_of(obj).get(EXCEPTION_PREFIX + rule_id, "")).strip())


def violations(rule: Rule, objects: list[Object], phase: int | None) -> list[Violation]:
    """The rule's findings on `objects`, minus those the objects are excepted from."""
    return [
        Violation(rule.id, rule.level, ref(obj), message)
        for obj, message in rule.findings(objects, phase)
        if rule.id == "policy-exception" or not excepted(obj, rule.id)
    ]


def evaluate(objects: list[Object], phase: int | None, rules: tuple[Rule, ...] = RULES) -> list[Violation]:
    """Every violation of every rule, rule by rule."""
    return [violation for rule in rules for violation in violations(rule, objects, phase)]
