"""NetworkPolicies derived from a stack's objects: what is read, what is allowed, schema-valid."""

from __future__ import annotations

from typing import Any

from components import cli, topology, validation
from components.config import from_values
from components.edge_cache import PURGE_PORT
from components.network_policy import API_SERVER_PORTS, Flow, flows, network_policies, uses_api_server
from components.stack import Secrets, build

GATEWAY = (
    ("gateway.envoyproxy.io/owning-gateway-name", "edge"),
    ("gateway.envoyproxy.io/owning-gateway-namespace", "scaleladder-gateway"),
)


def _phase(name: str) -> tuple[Any, list[dict[str, Any]]]:
    stack = cli.load_stack(name)
    objects = [o for o in stack.objects() if o["kind"] != "NetworkPolicy"]
    return stack.meta, objects


def test_phase3_flows_come_from_env_config_files_and_the_route() -> None:
    _, objects = _phase("phase3")
    migrate = next(o["metadata"]["name"] for o in objects if o["kind"] == "Job")
    assert sorted(flows(objects), key=repr) == sorted(
        [
            Flow(migrate, "postgres", 5432, "TCP"),  # DATABASE_URL=...@postgres-rw:5432 (migrations bypass the pooler)
            Flow("web", "pgbouncer", 6432, "TCP"),  # DATABASE_URL=...@pgbouncer:6432
            Flow("web", "session-store", 6379, "TCP"),  # REDIS_URL=redis://session-store:6379/0
            # MEMBERS_HOST=postgres: members stream from the leader and ask each other's Patroni API (8008)
            Flow("postgres", "postgres", None, "any"),
            Flow("pgbouncer", "postgres", 5432, "TCP"),  # pgbouncer.ini: host=postgres-rw and host=postgres-ro
            Flow(None, "web", 8080, "TCP", GATEWAY),  # HTTPRoute web -> Service web, from the Gateway's proxies
        ],
        key=repr,
    )


def test_policies_deny_by_default_then_allow_each_flow_on_both_ends() -> None:
    meta, objects = _phase("phase2")
    policies = {p["metadata"]["name"]: p["spec"] for p in network_policies(meta, objects)}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert policies["allow-dns"]["egress"][0]["ports"] == [
        {"protocol": "UDP", "port": 53},
        {"protocol": "TCP", "port": 53},
    ]
    web = {
        "app.kubernetes.io/name": "web",
        "app.kubernetes.io/instance": "phase2",
        "app.kubernetes.io/component": "server",
    }
    primary = {
        "app.kubernetes.io/name": "postgres",
        "app.kubernetes.io/instance": "phase2",
        "app.kubernetes.io/component": "primary",
    }
    assert policies["web-egress"] == {
        "podSelector": {"matchLabels": web},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": primary}}], "ports": [{"protocol": "TCP", "port": 5432}]}],
    }
    ingress = policies["postgres-ingress"]["ingress"]
    assert {"from": [{"podSelector": {"matchLabels": web}}], "ports": [{"protocol": "TCP", "port": 5432}]} in ingress
    assert "web-ingress" not in policies  # phase 2 has no route: nothing reaches web from outside


def test_patroni_members_reach_each_other_and_the_api_server_and_nothing_else() -> None:
    meta, objects = _phase("phase3")
    policies = {p["metadata"]["name"]: p["spec"] for p in network_policies(meta, objects)}
    members = {
        "app.kubernetes.io/name": "postgres",
        "app.kubernetes.io/instance": "phase3",
        "app.kubernetes.io/component": "database",
    }
    # the group's members on every port (Postgres and Patroni's API), then the API server's ports (no `to`:
    # its address is the cluster's, not a pod's)
    assert policies["postgres-egress"] == {
        "podSelector": {"matchLabels": members},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": members}}]}, {"ports": list(API_SERVER_PORTS)}],
    }
    assert API_SERVER_PORTS == ({"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443})
    assert {"from": [{"podSelector": {"matchLabels": members}}]} in policies["postgres-ingress"]["ingress"]
    # no other workload mounts a token, so no other policy opens the API server's ports
    for name, spec in policies.items():
        if name != "postgres-egress":
            assert {"ports": list(API_SERVER_PORTS)} not in spec.get("egress", []), name


def test_a_workload_that_mounts_a_token_gets_the_api_server_even_with_no_other_calls() -> None:
    meta, _ = _phase("phase2")

    def workload(token: bool | None) -> dict[str, Any]:
        pod: dict[str, Any] = {"containers": [{"name": "op", "image": "example/op:1"}]}
        if token is not None:
            pod["automountServiceAccountToken"] = token
        labels = {"app.kubernetes.io/name": "op"}
        return {
            "kind": "Deployment",
            "metadata": {"name": "op"},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod}},
        }

    assert uses_api_server(workload(True))
    egress = {p["metadata"]["name"]: p["spec"] for p in network_policies(meta, [workload(True)])}["op-egress"]
    assert egress["egress"] == [{"ports": list(API_SERVER_PORTS)}]
    # not mounting a token (or leaving it to the ServiceAccount's default) opens nothing
    for token in (False, None):
        assert not uses_api_server(workload(token))
        names = [p["metadata"]["name"] for p in network_policies(meta, [workload(token)])]
        assert "op-egress" not in names


def test_a_selector_naming_a_label_patroni_sets_at_run_time_matches_by_its_other_labels() -> None:
    labels = {"app": "db", "tier": "data"}
    assert set(topology.RUNTIME_LABELS) == {"role"}
    assert topology.selects({"app": "db", "role": "primary"}, labels)
    assert topology.selects({"app": "db", "role": "replica"}, labels)
    assert not topology.selects({"app": "web", "role": "primary"}, labels)
    # a selector of run-time labels only says nothing about the workload: it matches none
    assert not topology.selects({"role": "primary"}, labels)
    assert not topology.selects({}, labels)


def test_the_gateway_peer_is_its_proxies_in_any_namespace() -> None:
    meta, objects = _phase("phase3")
    web = next(p for p in network_policies(meta, objects) if p["metadata"]["name"] == "web-ingress")
    assert web["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": dict(GATEWAY)}}],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }
    ]


def test_a_job_sharing_an_apps_name_is_not_selected_with_it() -> None:
    meta, objects = _phase("phase4")
    redis = next(p for p in network_policies(meta, objects) if p["metadata"]["name"] == "redis-shard-0-ingress")
    assert redis["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "cache"


def test_a_volume_that_projects_some_keys_of_a_config_map_names_only_their_hosts() -> None:
    """The purge Job mounts only its script from the edge cache's ConfigMap, whose VCL names the
    origin: it reaches the Varnish replicas' purge port and nothing else."""
    for phase, origin in (("phase5", "web"), ("phase6", "catalog")):
        _, objects = _phase(phase)
        purge = next(o["metadata"]["name"] for o in objects if o["kind"] == "Job" and "purge" in o["metadata"]["name"])
        assert [(f.server, f.port) for f in flows(objects) if f.client == purge] == [("edge-cache", PURGE_PORT)]
        assert ("edge-cache", origin) in {(f.client, f.server) for f in flows(objects)}  # the VCL still counts


def test_cluster_members_reach_each_other_on_every_port() -> None:
    meta, objects = _phase("phase4")
    bootstrap = next(o["metadata"]["name"] for o in objects if o["kind"] == "Job" and "redis" in o["metadata"]["name"])
    found = flows(objects)
    # the members file (mounted redis-config) names the pods of the headless Service redis-nodes:
    # the cluster bus (6379 + 10000) is on no Service, so the shards get every port among themselves
    shards = [f"redis-shard-{index}" for index in range(3)]
    for client in shards:
        for server in shards:
            assert Flow(client, server, None, "any") in found
    # REDIS_NODES=redis-shard-0-0.redis-nodes...:6379: the bootstrap Job meets every member on the client port
    assert Flow(bootstrap, "redis-shard-1", 6379, "TCP") in found
    # the Job's pods match the Services' selector too, but serve none of their ports
    assert not [f for f in found if f.server == bootstrap]
    policies = {p["metadata"]["name"]: p["spec"] for p in network_policies(meta, objects)}
    cache = {
        "app.kubernetes.io/name": "redis",
        "app.kubernetes.io/instance": "phase4",
        "app.kubernetes.io/component": "cache",
    }
    shard_1 = {**cache, "scaleladder.dev/redis-shard": "1"}
    assert {"to": [{"podSelector": {"matchLabels": shard_1}}]} in policies["redis-shard-0-egress"]["egress"]
    assert {"from": [{"podSelector": {"matchLabels": shard_1}}]} in policies["redis-shard-0-ingress"]["ingress"]


def test_no_workloads_no_policies() -> None:
    meta, objects = _phase("kind")
    assert network_policies(meta, objects) == []


def test_every_stack_policies_are_schema_valid_and_labelled() -> None:
    for name in cli.stack_names(cli.STACKS):
        meta, objects = _phase(name)
        policies = network_policies(meta, objects)
        assert validation.problems(policies) == []
        assert all(p["metadata"]["labels"]["app.kubernetes.io/component"] == "network-policy" for p in policies)


def test_hosts_named_only_in_env_host_vars_and_config_files_count() -> None:
    service = {
        "kind": "Service",
        "metadata": {"name": "db"},
        "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]},
    }
    server = {
        "kind": "Deployment",
        "metadata": {"name": "db"},
        "spec": {"template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db"}]}}},
    }

    def client(name: str, pod: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "Deployment", "metadata": {"name": name}, "spec": {"template": {"metadata": {}, "spec": pod}}}

    by_env = client("a", {"containers": [{"name": "a", "env": [{"name": "DB_HOST", "value": "db"}]}]})
    by_file = client("b", {"containers": [{"name": "b"}], "volumes": [{"name": "c", "configMap": {"name": "conf"}}]})
    conf = {"kind": "ConfigMap", "metadata": {"name": "conf"}, "data": {"x.ini": "main = host=db.ns.svc port=5432"}}
    vcl = {"kind": "ConfigMap", "metadata": {"name": "vcl"}, "data": {"default.vcl": 'backend o { .host = "db"; }'}}
    by_vcl = client("d", {"containers": [{"name": "d"}], "volumes": [{"name": "v", "configMap": {"name": "vcl"}}]})
    unrelated = client("c", {"containers": [{"name": "c", "env": [{"name": "DB_NAME", "value": "db"}]}]})
    by_dns = client(
        "e", {"containers": [{"name": "e", "env": [{"name": "PEERS", "value": "db.ns.svc.cluster.local"}]}]}
    )
    elsewhere = client("f", {"containers": [{"name": "f", "args": ["--db=db.other.svc.cluster.local"]}]})
    service["metadata"]["namespace"] = "ns"
    objects = [service, server, by_env, by_file, conf, unrelated, vcl, by_vcl, by_dns, elsewhere]
    assert [(w["metadata"]["name"], s["metadata"]["name"]) for w, s in topology.calls(objects)] == [
        ("a", "db"),
        ("b", "db"),
        ("d", "db"),
        ("e", "db"),
    ]


def test_keda_asks_only_the_catalog_through_its_service_port() -> None:
    _, objects = _phase("phase6")
    outside = [flow for flow in flows(objects) if flow.peer_namespace]
    assert outside == [Flow(None, "catalog", 15006, "TCP", (("app", "keda-operator"),), "keda")]


def test_keda_reads_the_queue_lag_from_the_nats_monitoring_port_only() -> None:
    config = from_values({"phase": 6, "queue": {"workers": {"keda": True}}})
    objects = [o for o in build("phase6", config, Secrets.development()).objects() if o["kind"] != "NetworkPolicy"]
    outside = {flow for flow in flows(objects) if flow.peer_namespace}
    keda = (("app", "keda-operator"),)
    # nats-jetstream's endpoint names the headless Service, which lists client, cluster and monitor ports
    assert outside == {Flow(None, "catalog", 15006, "TCP", keda, "keda"), Flow(None, "nats", 8222, "TCP", keda, "keda")}
