"""Day-two changes applied to the running ladder with `pulumi up`, as an operator would make them.

For each change of testsupport/day_two.py: the engine's preview plans exactly the updates, creates
and deletes the rendered objects call for, and replaces nothing; `pulumi up` applies it; nothing
holding data was deleted or replaced on the server (every claim and Secret keeps its identity, every
StatefulSet its generation unless the change is for it); the change's own effect is there (the
migrations ran before the rollout, the pods that read a ConfigMap rolled); a second preview is empty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from components.local import climb, plan, sim
from tests.cluster.conftest import SimulatedCluster
from testsupport.day_two import CHANGES, JOB_DIGEST, Changes, DayTwoChange

pytestmark = pytest.mark.cluster


def planned(cluster: SimulatedCluster, stack: str) -> tuple[Changes, set[str]]:
    """The preview's plan as `Kind/name` sets (a Job's digest as `*`), and the names of what it would replace."""
    plan = climb.planned(cluster.pulumi_json(stack, "preview"))

    def starred(names: frozenset[str]) -> frozenset[str]:
        return frozenset(JOB_DIGEST.sub("-*", name) for name in names)

    return Changes(starred(plan.updated), starred(plan.created), starred(plan.deleted)), set(starred(plan.replaced))


def data_holders(cluster: SimulatedCluster, namespace: str) -> dict[str, Any]:
    """Every claim and Secret by its UID and version, every StatefulSet by its UID and generation."""
    found = {}
    for kind, field in (("pvc", "resourceVersion"), ("secret", "resourceVersion"), ("statefulset.apps", "generation")):
        for item in cluster.kubectl_json("get", kind, "-n", namespace)["items"]:
            meta = item["metadata"]
            found[f"{item['kind']}/{meta['name']}"] = (meta["uid"], meta[field])
    return found


def timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def migrations_ran_before_the_rollout(cluster: SimulatedCluster, namespace: str) -> None:
    """The new image's migrations Job completed before the web Deployment made its new ReplicaSet."""
    selector = "app.kubernetes.io/component=migrations"
    [job] = cluster.kubectl_json("get", "job.batch", "-n", namespace, "-l", selector)["items"]
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    replica_sets = cluster.kubectl_json("get", "replicaset.apps", "-n", namespace, "-l", "app.kubernetes.io/name=web")
    [new] = [rs for rs in replica_sets["items"] if rs["spec"]["template"]["spec"]["containers"][0]["image"] == image]
    assert timestamp(job["status"]["completionTime"]) <= timestamp(new["metadata"]["creationTimestamp"])


def pooler_pods_rolled(cluster: SimulatedCluster, namespace: str) -> None:
    """Every PgBouncer pod carries the checksum of the pgbouncer.ini the ConfigMap now holds."""
    config = cluster.kubectl_json("get", "configmap", "pgbouncer-config", "-n", namespace)["data"]["pgbouncer.ini"]
    assert "max_client_conn = 500" in config
    pool = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=pgbouncer")["items"]
    running = [pod for pod in pool if "deletionTimestamp" not in pod["metadata"]]
    checksums = {pod["metadata"]["annotations"]["checksum/config"] for pod in running}
    assert checksums == {hashlib.sha256(config.encode()).hexdigest()}, checksums


EFFECTS: dict[str, Callable[[SimulatedCluster, str], None]] = {
    "new web image": migrations_ran_before_the_rollout,
    "PgBouncer setting": pooler_pods_rolled,
}


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.name)
def test_a_day_two_change_is_planned_exactly_and_applied_without_touching_data(
    ladder: SimulatedCluster, change: DayTwoChange
) -> None:
    namespace = plan.namespace(change.stack)
    before = data_holders(ladder, namespace)
    ladder.stack_file(change.stack).write_text(ladder.config_with(change.stack, change.settings))

    changes, replaced = planned(ladder, change.stack)
    assert replaced == set(), f"{change.name}: the engine would replace {sorted(replaced)}"
    assert changes == change.expected

    ladder.run([ladder.pulumi_step(change.stack, "up", "--yes", "--skip-preview")], timing=f"{change.name} up")
    workloads = ladder.kubectl_json("get", "deployment.apps,statefulset.apps,job.batch", "-n", namespace)["items"]
    assert sim.unready(workloads) == []
    after = data_holders(ladder, namespace)
    for name, (uid, version) in before.items():
        assert name in after and after[name][0] == uid, f"{change.name}: {name} was deleted or replaced"
        if name not in change.expected.updated:
            assert after[name][1] == version, f"{change.name}: {name} changed"
    if change.name in EFFECTS:
        EFFECTS[change.name](ladder, namespace)
    ladder.run([ladder.pulumi_step(change.stack, "preview", "--expect-no-changes")])
