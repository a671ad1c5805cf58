"""Every rule fails on a minimally broken object, with the message a reader needs to fix it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components import cli
from components.network_policy import API_SERVER_PORTS
from policies.containers import SECRET_FILE_FIX
from policies.model import EXCEPTION_PREFIX
from policies.rules import RULES, evaluate
from tests.policy.objects import (
    META,
    autoscaler,
    budget,
    changed,
    deployment,
    job_sharing_labels_with,
    namespace,
    route,
    scaled_object,
    service,
    stack,
)

C = "spec.template.spec.containers.0"
POD = "spec.template.spec"
SECRET_REF = {"secretKeyRef": {"name": "db", "key": "password"}}
PROJECTED = {
    "projected": {
        "defaultMode": 0o440,
        "sources": [{"secret": {"name": "db", "items": [{"key": "password", "path": "db/password"}]}}],
    }
}


def good() -> list[dict[str, Any]]:
    return [deployment(replicas=2), budget(), service(), route()]


def messages(rule_id: str, objects: list[dict[str, Any]], phase: int | None = None) -> list[str]:
    return [v.message for v in evaluate(objects, phase) if v.rule == rule_id]


def test_a_well_built_stack_passes_every_rule() -> None:
    assert evaluate(stack(*good()), None) == []


def test_every_rule_has_a_failing_case() -> None:
    assert {rule.id for rule in RULES} == set(CASES)


def _with_container(path: str, value: Any) -> list[dict[str, Any]]:
    return stack(changed(deployment(), f"{C}.{path}", value), service(), route())


def _with_secret_volume(volume: dict[str, Any], *, read_only: bool, item_mode: int | None = None) -> dict[str, Any]:
    """The deployment with Secret volume `db` mounted into its container at /run/secrets."""
    volume = {"name": "db", **copy.deepcopy(volume)}
    if item_mode is not None:
        volume["projected"]["sources"][0]["secret"]["items"][0]["mode"] = item_mode
    workload = deployment()
    pod = workload["spec"]["template"]["spec"]
    pod["volumes"] = [*pod.get("volumes", []), volume]
    container = pod["containers"][0]
    container["volumeMounts"] = [
        *container.get("volumeMounts", []),
        {"name": "db", "mountPath": "/run/secrets", "readOnly": read_only},
    ]
    return workload


def _stateful_without_startup() -> dict[str, Any]:
    workload = changed(deployment(), f"{C}.startupProbe", None)
    return {**workload, "kind": "StatefulSet"}


def _job(name: str, labels: dict[str, str]) -> dict[str, Any]:
    pod = deployment(name)["spec"]["template"]
    pod["metadata"]["labels"] = labels
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": META.metadata(name, "bootstrap"),
        "spec": {"template": pod},
    }


def _without_label(obj: dict[str, Any], label: str) -> dict[str, Any]:
    del obj["metadata"]["labels"][label]
    return obj


def _without(objects: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["metadata"]["name"] != name]


def _extra_port(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    policy = next(o for o in objects if o["metadata"]["name"] == "app-ingress")
    return [
        *_without(objects, "app-ingress"),
        changed(policy, "spec.ingress.0.ports", [{"protocol": "TCP", "port": 9090}]),
    ]


def _ip_block(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    policy = next(o for o in objects if o["metadata"]["name"] == "app-ingress")
    peer = [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    return [*_without(objects, "app-ingress"), changed(policy, "spec.ingress.0.from", peer)]


def _client_and_server() -> list[dict[str, Any]]:
    client = deployment("client")
    client["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "API", "value": "http://app:80"}]
    return stack(client, deployment(), service(), route())


def _cluster() -> list[dict[str, Any]]:
    """Members that find each other through a headless Service (`db-0.db-peers:80`)."""
    members = deployment("db")
    members["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "PEERS", "value": "db-0.db-peers:80"}]
    peers = changed(service("db-peers", selector_of="db"), "spec.clusterIP", "None")
    return stack(members, peers)


def _ports_on_peers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    policy = next(o for o in objects if o["metadata"]["name"] == "db-ingress")
    ports = [{"protocol": "TCP", "port": 8080}]
    return [*_without(objects, "db-ingress"), changed(policy, "spec.ingress.0.ports", ports)]


def _any_namespace(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    policy = next(o for o in objects if o["metadata"]["name"] == "client-egress")
    peer = [{"namespaceSelector": {}, "podSelector": policy["spec"]["egress"][0]["to"][0]["podSelector"]}]
    return [*_without(objects, "client-egress"), changed(policy, "spec.egress.0.to", peer)]


def _connection_scaler() -> dict[str, Any]:
    """A ScaledObject whose metrics-api trigger asks the Service `app` (KEDA's operator calls it)."""
    scaler = scaled_object()
    url = f"http://app.{META.namespace}.svc.cluster.local/realtime/connections"
    metadata = {"url": url, "valueLocation": "total", "targetValue": "800"}
    scaler["spec"]["triggers"] = [{"type": "metrics-api", "metricType": "AverageValue", "metadata": metadata}]
    return scaler


def test_keda_reaching_the_service_a_scaler_asks_is_admitted() -> None:
    assert evaluate(stack(deployment(replicas=None), budget(), service(), route(), _connection_scaler()), None) == []


def _api_server_egress(objects: list[dict[str, Any]], name: str = "app", ports: Any = None) -> list[dict[str, Any]]:
    """The objects plus `<name>-egress` with one rule: the API server's ports, no `to` (what a Patroni group gets)."""
    selector = next(
        o["spec"]["selector"]["matchLabels"]
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] == name
    )
    rule = {"ports": list(API_SERVER_PORTS) if ports is None else ports}
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": META.metadata(name, "network-policy", object_name=f"{name}-egress"),
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Egress"], "egress": [rule]},
    }
    return [*_without(objects, f"{name}-egress"), policy]


def _with_token(obj: dict[str, Any]) -> dict[str, Any]:
    return changed(obj, f"{POD}.automountServiceAccountToken", True)


def _every_port(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    policy = next(o for o in objects if o["metadata"]["name"] == "app-ingress")
    return [*_without(objects, "app-ingress"), changed(policy, "spec.ingress.0.ports", None)]


def _redis_cluster(conf: str) -> list[dict[str, Any]]:
    redis = {**deployment("redis", component="cache"), "kind": "StatefulSet"}
    pod = redis["spec"]["template"]["spec"]
    pod["containers"][0]["image"] = "redis:7.0.15"
    pod["volumes"] = [{"name": "config", "configMap": {"name": "redis-config"}}]
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": META.metadata("redis", "cache", object_name="redis-config"),
        "data": {"redis.conf": conf},
    }
    return [redis, config]


D = "Deployment/app"
CASES: dict[str, list[tuple[list[dict[str, Any]], int | None, str]]] = {
    "pinned-image": [
        (
            _with_container("image", "example/app:latest"),
            None,
            f"{D}: container app image 'example/app:latest' (spec.template.spec.containers[0].image) uses the moving "
            "tag `latest`; fix: pin an explicit version, e.g. example/app:1.2.3 or @sha256:<digest>",
        ),
        (
            _with_container("image", "registry:5000/app"),
            None,
            f"{D}: container app image 'registry:5000/app' (spec.template.spec.containers[0].image) has no tag; "
            "fix: pin an explicit version, e.g. registry:5000/app:1.2.3 or @sha256:<digest>",
        ),
    ],
    "resources": [
        (
            _with_container("resources.limits", None),
            None,
            f"{D}: container app has no limits.cpu, limits.memory (spec.template.spec.containers[0].resources); "
            "fix: set cpu and memory requests and limits (components.pods.Resources)",
        )
    ],
    "probes": [
        (
            _with_container("readinessProbe", None),
            None,
            f"{D}: container app has no readinessProbe (spec.template.spec.containers[0]); fix: add a readiness "
            "probe (can it serve?) and a liveness probe (is the process stuck?)",
        ),
        (
            _with_container(
                "readinessProbe", deployment()["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
            ),
            None,
            f"{D}: container app readinessProbe is the same as its livenessProbe "
            "(spec.template.spec.containers[0].readinessProbe); fix: make readiness check what serving needs and "
            "liveness only the process, so a failing dependency takes pods out of the Service instead of restarting "
            "them",
        ),
    ],
    "startup-probe": [
        (
            [_stateful_without_startup()],
            None,
            "StatefulSet/app: container app has no startupProbe (spec.template.spec.containers[0].startupProbe) "
            "although start-up is slow: it belongs to a StatefulSet (recovers data and rejoins its peers on start); "
            "fix: add a startupProbe allowing the whole start-up, so liveness cannot restart it mid-start",
        ),
        (
            [changed(changed(deployment(), f"{C}.startupProbe", None), f"{C}.livenessProbe.initialDelaySeconds", 60)],
            None,
            f"{D}: container app has no startupProbe (spec.template.spec.containers[0].startupProbe) although "
            "start-up is slow: its livenessProbe waits initialDelaySeconds=60 for start-up; fix: add a startupProbe "
            "allowing the whole start-up, so liveness cannot restart it mid-start",
        ),
    ],
    "non-root": [
        (
            [changed(deployment(), f"{POD}.securityContext.runAsNonRoot", None)],
            None,
            f"{D}: container app may run as root: neither spec.template.spec.securityContext.runAsNonRoot nor "
            "spec.template.spec.containers[0].securityContext.runAsNonRoot is true; fix: set runAsNonRoot: true "
            "(components.pods.pod_security)",
        ),
        (
            [changed(deployment(), f"{C}.securityContext.runAsUser", 0)],
            None,
            f"{D}: container app spec.template.spec.containers[0].securityContext.runAsUser is 0 (root); "
            "fix: run as a non-zero uid",
        ),
    ],
    "no-privilege-escalation": [
        (
            [changed(deployment(), f"{C}.securityContext.allowPrivilegeEscalation", True)],
            None,
            f"{D}: container app spec.template.spec.containers[0].securityContext: allowPrivilegeEscalation is not "
            "false; fix: set allowPrivilegeEscalation: false and capabilities.drop: [ALL] "
            "(components.pods.container_security)",
        )
    ],
    "read-only-root": [
        (
            [changed(deployment(), f"{C}.securityContext.readOnlyRootFilesystem", False)],
            None,
            f"{D}: container app spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem is not "
            "true; fix: set it and mount an emptyDir where the image writes, or annotate the object "
            "scaleladder.io/policy-exception.read-only-root with the reason the image needs a writable root",
        )
    ],
    "secret-env-literal": [
        (
            [changed(deployment(), f"{C}.env", [{"name": "POSTGRES_PASSWORD", "value": "hunter2"}])],
            None,
            f"{D}: container app env POSTGRES_PASSWORD (spec.template.spec.containers[0].env[0].value) holds a "
            f"secret as a literal; {SECRET_FILE_FIX}",
        ),
        (
            [
                changed(
                    deployment(),
                    f"{C}.env",
                    [{"name": "DATABASE_URL", "value": "postgresql://app:hunter2@db:5432/app"}],
                )
            ],
            None,
            f"{D}: container app env DATABASE_URL (spec.template.spec.containers[0].env[0].value) embeds a password "
            "in a URL; fix: leave the password out of the URL and pass the path of its Secret file in "
            "<NAME>_PASSWORD_FILE",
        ),
    ],
    "secret-file": [
        (
            [changed(deployment(), f"{C}.env", [{"name": "DATABASE_PASSWORD", "valueFrom": SECRET_REF}])],
            None,
            f"{D}: container app env DATABASE_PASSWORD (spec.template.spec.containers[0].env[0].valueFrom."
            "secretKeyRef) reads Secret db key password into the environment, where every child process and crash "
            f"report sees it; {SECRET_FILE_FIX}",
        ),
        (
            [changed(deployment(), f"{C}.envFrom", [{"secretRef": {"name": "db"}}])],
            None,
            f"{D}: container app spec.template.spec.containers[0].envFrom[0].secretRef puts every key of Secret db "
            f"into the environment; {SECRET_FILE_FIX}",
        ),
        (
            [_with_secret_volume({"secret": {"secretName": "db"}}, read_only=True)],
            None,
            f"{D}: Secret volume db spec.template.spec.volumes[0].secret.defaultMode is unset (0644); fix: at most "
            "0440 (owner and the pod's fsGroup read, nobody writes or runs it, others nothing)",
        ),
        (
            [_with_secret_volume(PROJECTED, read_only=True, item_mode=0o444)],
            None,
            f"{D}: Secret volume db spec.template.spec.volumes[0].projected.sources[0].secret.items[0].mode is 0444; "
            "fix: at most 0440 (owner and the pod's fsGroup read, nobody writes or runs it, others nothing)",
        ),
        (
            [_with_secret_volume(PROJECTED, read_only=False)],
            None,
            f"{D}: container app mounts Secret volume db writable (spec.template.spec.containers[0].volumeMounts[0]"
            ".readOnly is not true); fix: mount it readOnly: true",
        ),
    ],
    "high-ids": [
        (
            [changed(deployment(), f"{C}.securityContext.runAsUser", 999)],
            None,
            f"{D}: container app runs with runAsUser 999, below 10000 (spec.template.spec.containers[0]."
            "securityContext.runAsUser or spec.template.spec.securityContext.runAsUser); fix: run every container "
            "as a uid and gid of 10000 or more, which no host system user or group has (components.pods.pod_security)",
        ),
        (
            [
                changed(
                    changed(deployment(), f"{POD}.securityContext.runAsGroup", None),
                    f"{C}.securityContext.runAsGroup",
                    None,
                )
            ],
            None,
            f"{D}: container app runs with runAsGroup unset (the image decides) (spec.template.spec.containers[0]."
            "securityContext.runAsGroup or spec.template.spec.securityContext.runAsGroup); fix: run every container "
            "as a uid and gid of 10000 or more, which no host system user or group has (components.pods.pod_security)",
        ),
        (
            [changed(deployment(), f"{POD}.securityContext.fsGroup", 1000)],
            None,
            f"{D}: spec.template.spec.securityContext.fsGroup is 1000, below 10000; fix: give the pod's volumes a "
            "group of 10000 or more (components.pods.pod_security)",
        ),
    ],
    "recommended-labels": [
        (
            [_without_label(deployment(), "app.kubernetes.io/part-of")],
            None,
            f"{D}: metadata.labels lacks app.kubernetes.io/part-of; fix: label it with Meta.metadata(...)",
        )
    ],
    "policy-exception": [
        (
            [changed(deployment(), "metadata.annotations", {f"{EXCEPTION_PREFIX}read-only-root": " "})],
            None,
            f"{D}: metadata.annotations[scaleladder.io/policy-exception.read-only-root] gives no reason, so the "
            "exception is not honoured; fix: say why the object needs it",
        ),
    ],
    "pdb-required": [
        (
            stack(deployment(replicas=3), service()),
            None,
            f"{D} runs up to 3 replicas but no PodDisruptionBudget selects its pods "
            "(spec.template.metadata.labels); fix: add a PDB with maxUnavailable: 1 selecting them",
        )
    ],
    "pdb-consistent": [
        (
            [deployment(replicas=None), scaled_object(minimum=2), budget(minAvailable=2)],
            None,
            f"PodDisruptionBudget/app allows 0 disruptions of {D} at 2 replicas (the minimum of ScaledObject/app), "
            "so it blocks every drain; fix: use maxUnavailable: 1, or a minAvailable below 2",
        ),
        (
            [deployment(replicas=None), autoscaler(minimum=2), budget(minAvailable=2)],
            None,
            f"PodDisruptionBudget/app allows 0 disruptions of {D} at 2 replicas (the minimum of "
            "HorizontalPodAutoscaler/app), so it blocks every drain; fix: use maxUnavailable: 1, or a minAvailable "
            "below 2",
        ),
        (
            [deployment(replicas=2), budget(maxUnavailable="0%")],
            None,
            f"PodDisruptionBudget/app allows 0 disruptions of {D} at 2 replicas (spec.replicas), so it blocks every "
            "drain; fix: use maxUnavailable: 1, or a minAvailable below 2",
        ),
        (
            [budget("nothing")],
            None,
            "PodDisruptionBudget/nothing: spec.selector matches the pods of no Deployment or StatefulSet in the "
            "stack; fix: select the labels of the workload it protects, or remove it",
        ),
        (
            [
                deployment(replicas=2),
                budget(),
                _job("app-setup", deployment()["spec"]["template"]["metadata"]["labels"]),
            ],
            None,
            "PodDisruptionBudget/app: spec.selector also matches the pods of Job/app-setup, which have no scale to "
            "count maxUnavailable or a percentage against, so the budget cannot be computed and allows no "
            "evictions; fix: narrow the selector (add app.kubernetes.io/component) to the workload it protects",
        ),
    ],
    "hpa-target": [
        (
            [deployment(replicas=3), scaled_object()],
            None,
            f"{D}: spec.replicas is set (3) although ScaledObject/app owns the replica count, so every "
            "deploy resets the autoscaler's choice; fix: leave spec.replicas unset",
        ),
        (
            [scaled_object("gone")],
            None,
            "ScaledObject/gone: spec.scaleTargetRef Deployment/gone is not in the stack; fix: point it at "
            "the workload it scales",
        ),
        (
            [deployment(replicas=2), autoscaler()],
            None,
            f"{D}: spec.replicas is set (2) although HorizontalPodAutoscaler/app owns the replica count, so every "
            "deploy resets the autoscaler's choice; fix: leave spec.replicas unset",
        ),
        (
            [autoscaler("gone")],
            None,
            "HorizontalPodAutoscaler/gone: spec.scaleTargetRef Deployment/gone is not in the stack; fix: point it at "
            "the workload it scales",
        ),
    ],
    "topology-spread": [
        (
            [changed(deployment(replicas=2), f"{POD}.topologySpreadConstraints", None), budget()],
            None,
            f"{D} runs up to 2 replicas with no topologySpreadConstraints or podAntiAffinity selecting its own pods "
            "(spec.template.spec); fix: spread them across nodes and zones (components.pods.spread)",
        )
    ],
    "service-selects-workload": [
        (
            [deployment(), service("db", selector_of="db")],
            None,
            "Service/db: spec.selector {'app.kubernetes.io/name': 'db', 'app.kubernetes.io/instance': 'test', "
            "'app.kubernetes.io/component': 'server'} matches the pods of no workload in the stack; fix: use the "
            "workload's selector labels (Meta.selector)",
        ),
        (
            [deployment(), changed(service(), "spec.selector", None)],
            None,
            "Service/app: spec.selector is empty, so the Service has no endpoints the stack manages; fix: select "
            "the pods of the workload it fronts",
        ),
        (
            [deployment(), service(), job_sharing_labels_with(deployment())],
            None,
            "Service/app: spec.selector {'app.kubernetes.io/name': 'app', 'app.kubernetes.io/instance': 'test', "
            "'app.kubernetes.io/component': 'server'} also matches the pods of Job/app-setup, which would receive "
            "the Service's traffic while they run; fix: give the Job's pods their own app.kubernetes.io/name "
            "(e.g. <name>-bootstrap)",
        ),
    ],
    "route-backend-exists": [
        (
            [deployment(), service(), route("missing")],
            None,
            "HTTPRoute/missing: spec.rules[0].backendRefs[0] names Service 'missing', which is not in the stack; "
            "fix: point it at one of ['app']",
        ),
        (
            [deployment(), service(), route(port=8080)],
            None,
            "HTTPRoute/app: spec.rules[0].backendRefs[0] uses port 8080, which Service app does not expose; "
            "fix: use one of its ports [80]",
        ),
    ],
    "network-default-deny": [
        (
            _without(stack(*good()), "default-deny"),
            None,
            "Namespace/scaleladder-test has no default-deny NetworkPolicy (spec.podSelector: {}, policyTypes: "
            "[Ingress, Egress], no rules); fix: add one (components.network_policy.network_policies)",
        )
    ],
    "network-allows": [
        (
            [*stack(deployment(replicas=None), budget(), service(), route()), _connection_scaler()],
            None,
            "Deployment/app: no NetworkPolicy admits ingress from the pods {'app': 'keda-operator'} of namespace "
            "keda on TCP/8080, which its autoscaler needs; fix: allow it in app-ingress",
        ),
        (
            _without(_client_and_server(), "client-egress"),
            None,
            "Deployment/client: no NetworkPolicy admits egress for client -> app on TCP/8080, which client uses; "
            "fix: allow it in client-egress",
        ),
        (
            _without(stack(*good()), "allow-dns"),
            None,
            f"{D}: no NetworkPolicy admits egress to kube-dns on UDP/53, so its pods cannot resolve Service names; "
            "fix: add the allow-dns policy",
        ),
        (
            _extra_port(_client_and_server()),
            None,
            "NetworkPolicy/app-ingress: spec.ingress[0] admits client -> app on port 9090, which client never uses; "
            "fix: allow only the connections the stack makes",
        ),
        (
            _ip_block(_client_and_server()),
            None,
            "NetworkPolicy/app-ingress: spec.ingress[0] admits ipBlock 0.0.0.0/0, which nothing in the stack uses; "
            "fix: allow only the connections the stack makes",
        ),
        (
            _every_port(_client_and_server()),
            None,
            "NetworkPolicy/app-ingress: spec.ingress[0] admits client -> app on every port (no ports), which client "
            "never uses; fix: allow only the connections the stack makes",
        ),
        (
            _any_namespace(_client_and_server()),
            None,
            "NetworkPolicy/client-egress: spec.egress[0] admits {'namespaceSelector': {}, 'podSelector': "
            "{'matchLabels': {'app.kubernetes.io/name': 'app', 'app.kubernetes.io/instance': 'test', "
            "'app.kubernetes.io/component': 'server'}}}, pods of other namespaces, which no workload of the stack "
            "calls; fix: allow only the connections the stack makes",
        ),
        (
            _ports_on_peers(_cluster()),
            None,
            "Deployment/db: no NetworkPolicy admits ingress for db -> db on every port, which db uses; fix: allow it "
            "in db-ingress",
        ),
        (
            _api_server_egress(stack(*good())),
            None,
            "NetworkPolicy/app-egress: spec.egress[0] admits the API server's ports to pods that do not mount a "
            "ServiceAccount token; fix: allow only the connections the stack makes",
        ),
    ],
    "phase-autoscaled-web": [
        (
            [namespace(), changed(deployment("orders"), f"{POD}.containers.0.args", ["serve"])],
            6,
            "phase 6 stack: Deployment/orders serves the web tier but is not the scaleTargetRef of any "
            "HorizontalPodAutoscaler or ScaledObject; fix: enable web.autoscaling (phase 3 and up scale the web tier "
            "horizontally)",
        ),
        (
            [namespace(), deployment("web")],
            3,
            "phase 3 stack: no Deployment runs the web tier (`sample serve`); fix: deploy it",
        ),
    ],
    "phase-redis-cluster": [
        (
            [namespace(), *_redis_cluster("cluster-enabled no\n")],
            4,
            "phase 4 stack: no StatefulSet runs redis with `cluster-enabled yes` in its mounted redis.conf; fix: set "
            "redis.mode: cluster (phase 4 and up cache in a Redis Cluster)",
        )
    ],
    "phase-edge-cache": [
        (
            [namespace(), deployment(), service(), route()],
            5,
            "phase 5 stack: no HTTPRoute sends traffic to a Varnish edge cache; fix: enable the edge cache and route "
            "to its Service (phase 5 and up serve cacheable responses from the edge)",
        )
    ],
    "phase-queue": [
        (
            [namespace(), deployment()],
            6,
            "phase 6 stack: no workload runs nats-server with JetStream configured in a mounted ConfigMap; fix: "
            "enable the queue (phase 6 hands slow work to JetStream workers)",
        )
    ],
}


@pytest.mark.parametrize(
    ("rule_id", "objects", "phase", "expected"),
    [(rule_id, *case) for rule_id, cases in CASES.items() for case in cases],
    ids=[f"{rule_id}-{n}" for rule_id, cases in CASES.items() for n in range(len(cases))],
)
def test_rule_fails_with_its_message(
    rule_id: str, objects: list[dict[str, Any]], phase: int | None, expected: str
) -> None:
    assert expected in messages(rule_id, objects, phase)


def live(obj: dict[str, Any], *owners: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """`obj` as the API server returns it: with managedFields (manager, operation, fieldsV1)."""
    managed = [{"manager": m, "operation": op, "fieldsV1": fields} for m, op, fields in owners]
    return {**obj, "metadata": {**obj["metadata"], "managedFields": managed}}


def test_a_live_replica_count_the_autoscaler_wrote_is_not_the_deployers() -> None:
    """The engine hands stack rules the live object of a deployed resource: `spec.replicas` is there, but
    the HPA (kube-controller-manager, an Update through the scale subresource) owns it, not the kit."""
    applied = ("pulumi-kubernetes-8411f3eb", "Apply", {"f:spec": {"f:template": {}}})
    scaled = ("kube-controller-manager", "Update", {"f:spec": {"f:replicas": {}}})
    assert messages("hpa-target", [live(deployment(replicas=3), applied, scaled), autoscaler()], 3) == []
    set_by_kit = ("pulumi-kubernetes-8411f3eb", "Apply", {"f:spec": {"f:replicas": {}, "f:template": {}}})
    found = messages("hpa-target", [live(deployment(replicas=3), set_by_kit), autoscaler()], 3)
    assert [m for m in found if "spec.replicas is set (3)" in m]


def test_a_purge_job_let_through_to_the_origin_is_more_than_the_stack_uses() -> None:
    """What the builder rendered while the purge Job's script mount counted the VCL's backends as its calls."""
    objects = cli.load_stack("phase5").objects()
    job = next(o["metadata"]["name"] for o in objects if o["kind"] == "Job" and "purge" in o["metadata"]["name"])
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == f"{job}-egress")
    web = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "web")
    egress = policy["spec"]["egress"]
    egress.append(
        {"to": [{"podSelector": {"matchLabels": web["spec"]["selector"]["matchLabels"]}}], "ports": [{"port": 8080}]}
    )
    assert messages("network-allows", objects, 5) == [
        f"NetworkPolicy/{job}-egress: spec.egress[{len(egress) - 1}] admits {job} -> web on port 8080, which {job} "
        "never uses; fix: allow only the connections the stack makes"
    ]


API_SERVER_MESSAGE = (
    "NetworkPolicy/app-egress: spec.egress[0] admits the API server's ports to pods that do not mount a "
    "ServiceAccount token; fix: allow only the connections the stack makes"
)


def test_the_api_server_rule_is_flagged_on_pods_without_a_token() -> None:
    assert messages("network-allows", _api_server_egress(stack(*good()))) == [API_SERVER_MESSAGE]
    # a token switched off explicitly is no token either
    without = changed(deployment(replicas=2), f"{POD}.automountServiceAccountToken", False)
    assert messages("network-allows", _api_server_egress(stack(without, budget(), service(), route()))) == [
        API_SERVER_MESSAGE
    ]


def test_the_api_server_rule_is_flagged_when_its_policy_also_guards_pods_without_a_token() -> None:
    """`app` mounts a token, `app-worker` (same name label, other component) does not: the policy selects both."""
    worker = deployment("app-worker", component="worker")
    for labels in (worker["spec"]["selector"]["matchLabels"], worker["spec"]["template"]["metadata"]["labels"]):
        labels["app.kubernetes.io/name"] = "app"
    objects = stack(_with_token(deployment(replicas=2)), worker, budget(), service(), route())
    policy = next(o for o in objects if o["metadata"]["name"] == "app-egress")
    broad = changed(policy, "spec.podSelector.matchLabels", META.selector("app"))
    assert API_SERVER_MESSAGE in messages("network-allows", [*_without(objects, "app-egress"), broad])


def test_the_api_server_rule_is_accepted_on_pods_that_mount_a_token() -> None:
    objects = stack(_with_token(deployment(replicas=2)), budget(), service(), route())
    # the builder gives such a workload exactly that rule, and every rule passes it
    egress = next(o for o in objects if o["metadata"]["name"] == "app-egress")["spec"]["egress"]
    assert egress == [{"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}]
    assert evaluate(objects, None) == []
    # only the exact ports: another port with no `to` is every peer, token or not
    wider = _api_server_egress(objects, ports=[*API_SERVER_PORTS, {"protocol": "TCP", "port": 8443}])
    assert messages("network-allows", wider) == [
        "NetworkPolicy/app-egress: spec.egress[0] admits every peer (no from/to); fix: allow only the connections "
        "the stack makes"
    ]


@pytest.mark.parametrize(("phase", "groups"), [(3, ["postgres"]), (5, ["pg-shard-0", "pg-shard-1", "postgres"])])
def test_the_patroni_groups_reach_the_api_server_and_pass(phase: int, groups: list[str]) -> None:
    objects = cli.load_stack(f"phase{phase}").objects()
    with_api = sorted(
        o["metadata"]["name"].removesuffix("-egress")
        for o in objects
        if o["kind"] == "NetworkPolicy" and {"ports": list(API_SERVER_PORTS)} in o["spec"].get("egress", [])
    )
    assert with_api == groups
    assert messages("network-allows", objects, phase) == []
    # the same rule on the web tier, whose pods mount no token, is flagged
    web = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "web-egress")
    widened = changed(web, "spec.egress", [*web["spec"]["egress"], {"ports": list(API_SERVER_PORTS)}])
    found = messages("network-allows", [*(o for o in objects if o is not web), widened], phase)
    assert found == [
        f"NetworkPolicy/web-egress: spec.egress[{len(web['spec']['egress'])}] admits the API server's ports to pods "
        "that do not mount a ServiceAccount token; fix: allow only the connections the stack makes"
    ]
