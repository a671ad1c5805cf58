"""Edge-cache spec loading, builders, rendered VCL text and the CDN document."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import kubernetes_validate
import pytest

from components.edge_cache import (
    HTTP_PORT,
    PEERS,
    PURGE_PORT,
    SCRIPT,
    DeployPurge,
    EdgeCacheSpec,
    cacheable_prefixes,
    cdn_document,
    edge_cache_objects,
    fanout_env,
)
from components.edge_cache_vcl import CachePolicy, PathRule, render_vcl
from components.labels import Meta
from components.settings import load

META = Meta(namespace="phase5", instance="phase5", version="0.1.0")
REVISION = "scaleladder/sample:0.1.0"


def errors(raw: dict[str, Any]) -> list[str]:
    spec, problems = load(EdgeCacheSpec, raw, "edge_cache")
    assert spec is None
    return [str(problem) for problem in problems]


def objects(spec: EdgeCacheSpec | None = None, revision: str = REVISION) -> dict[str, dict[str, Any]]:
    return {
        f"{o['kind']}/{o['metadata']['name']}": o
        for o in edge_cache_objects(META, spec or EdgeCacheSpec(), revision=revision)
    }


def job_name(revision: str = REVISION) -> str:
    (name,) = [name for name in objects(revision=revision) if name.startswith("Job/")]
    return name


def test_defaults_load_from_an_empty_mapping() -> None:
    spec, problems = load(EdgeCacheSpec, {}, "edge_cache")
    assert problems == []
    assert spec == EdgeCacheSpec()


def test_rules_load_from_stack_config() -> None:
    raw = {"policy": {"rules": [{"prefix": "/assets/", "kind": "static", "ttl_seconds": 600}]}}
    spec, problems = load(EdgeCacheSpec, raw, "edge_cache")
    assert problems == []
    assert spec is not None
    assert spec.policy.rules == (PathRule(prefix="/assets/", kind="static", ttl_seconds=600),)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"policy": {"rules": [{"prefix": "/a/"}, {"prefix": "/a/"}]}},
            "scaleladder:edge_cache.policy.rules[1].prefix: must be unique, got '/a/' twice",
        ),
        (
            {"policy": {"rules": [{"prefix": "/a/", "kind": "cdn"}]}},
            "scaleladder:edge_cache.policy.rules[0].kind: must be one of 'static', 'api', 'pass', got 'cdn'",
        ),
        (
            {"policy": {"rules": [{"prefix": "api/"}]}},
            "scaleladder:edge_cache.policy.rules[0].prefix: must match /[A-Za-z0-9._~/-]*, got 'api/'",
        ),
        (
            {"policy": {"rules": [{"prefix": "/a/", "grace_seconds": 60, "stale_if_error_seconds": 30}]}},
            "scaleladder:edge_cache.policy.rules[0].stale_if_error_seconds: must be >= grace_seconds (60), got 30",
        ),
        (
            {"policy": {"invalidation_cidrs": ["10.244.0.1/16"]}},
            "scaleladder:edge_cache.policy.invalidation_cidrs[0]: must be an IPv4 network such as 10.244.0.0/16 "
            "(10.244.0.1/16 has host bits set)",
        ),
        (
            {"policy": {"session_cookies": ["sid;x"]}},
            "scaleladder:edge_cache.policy.session_cookies[0]: must match [A-Za-z0-9_.-]+, got 'sid;x'",
        ),
        (
            {"policy": {"ignored_query_params": ["utm_*x"]}},
            "scaleladder:edge_cache.policy.ignored_query_params[0]: must match [A-Za-z0-9_.-]+\\*?, got 'utm_*x'",
        ),
        (
            {"policy": {"origin": {"probe_window": 2, "probe_threshold": 3}}},
            "scaleladder:edge_cache.policy.origin.probe_threshold: must be <= probe_window (2), got 3",
        ),
        (
            {"storage_mib": 512},
            "scaleladder:edge_cache.resources.memory_limit: must be >= storage_mib + 128Mi (640Mi), got '512Mi'",
        ),
        (
            {"image": "varnish:latest"},
            "scaleladder:edge_cache.image: must match [a-z0-9./_-]+:[0-9][A-Za-z0-9._-]*, got 'varnish:latest'",
        ),
        (
            {"deploy_purge": {"ban_prefixes": ["/ok/", "*"]}},
            "scaleladder:edge_cache.deploy_purge.ban_prefixes[1]: must match /[A-Za-z0-9._~/-]*, got '*'",
        ),
        ({"replicas": 0}, "scaleladder:edge_cache.replicas: must be >= 1, got 0"),
    ],
)
def test_bad_values_name_the_key_the_value_and_the_rule(raw: dict[str, Any], message: str) -> None:
    assert errors(raw) == [message]


def test_objects_are_valid_kubernetes_1_34() -> None:
    for obj in objects().values():
        kubernetes_validate.validate(obj, "1.34.0", strict=True)


def test_object_set() -> None:
    assert list(objects()) == [
        "ConfigMap/edge-cache",
        "Deployment/edge-cache",
        "Service/edge-cache",
        f"Service/{PEERS}",
        "PodDisruptionBudget/edge-cache",
        job_name(),
    ]


def test_one_replica_has_no_budget_and_no_prefixes_no_job() -> None:
    spec = EdgeCacheSpec(replicas=1, deploy_purge=DeployPurge(ban_prefixes=()))
    assert list(objects(spec)) == [
        "ConfigMap/edge-cache",
        "Deployment/edge-cache",
        "Service/edge-cache",
        f"Service/{PEERS}",
    ]


def test_config_map_holds_the_rendered_vcl_and_the_script_file() -> None:
    data = objects()["ConfigMap/edge-cache"]["data"]
    assert data["default.vcl"] == render_vcl(CachePolicy())
    assert data["purge_fanout.py"] == SCRIPT.read_text()


def test_varnish_container_is_hardened_and_probed() -> None:
    pod = objects()["Deployment/edge-cache"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "varnish:7.1.2"
    assert container["command"][:2] == ["varnishd", "-F"]
    assert "http=:8080,HTTP" in container["command"]
    assert "purge=:8081,HTTP" in container["command"]
    assert "malloc,256m" in container["command"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    probes = [container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert all(probe["httpGet"]["path"] == "/varnish-health" for probe in probes)
    assert len({(p["periodSeconds"], p["failureThreshold"]) for p in probes}) == 3
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts == {"/etc/varnish", "/var/lib/varnish", "/tmp"}
    assert (
        pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
        == objects()["Deployment/edge-cache"]["spec"]["selector"]["matchLabels"]
    )


def test_a_policy_change_rolls_the_pods() -> None:
    def digest(spec: EdgeCacheSpec) -> str:
        template = objects(spec)["Deployment/edge-cache"]["spec"]["template"]
        return str(template["metadata"]["annotations"]["scaleladder.dev/vcl-sha256"])

    changed = EdgeCacheSpec(policy=replace(CachePolicy(), session_cookies=("session",)))
    assert digest(EdgeCacheSpec()) != digest(changed)


def test_services_split_public_and_invalidation_ports() -> None:
    public = objects()["Service/edge-cache"]["spec"]
    peers = objects()[f"Service/{PEERS}"]["spec"]
    assert public["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert "clusterIP" not in public
    assert peers["clusterIP"] == "None"
    assert peers["ports"] == [{"name": "purge", "port": PURGE_PORT, "targetPort": "purge", "protocol": "TCP"}]
    assert HTTP_PORT != PURGE_PORT


def test_purge_job_runs_the_script_once_per_release() -> None:
    assert re.fullmatch(r"Job/edge-cache-purge-[0-9a-f]{8}", job_name())
    assert job_name() == job_name()
    assert job_name("scaleladder/sample:0.2.0") != job_name()
    job = objects()[job_name()]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "/opt/edge/purge_fanout.py", "ban", "--prefix", "/"]
    assert {"name": "EDGE_CACHE_PEERS", "value": "edge-cache-peers.phase5.svc.cluster.local"} in container["env"]


def test_fanout_env_names_the_headless_service() -> None:
    assert fanout_env(META) == [
        {"name": "EDGE_CACHE_PEERS", "value": "edge-cache-peers.phase5.svc.cluster.local"},
        {"name": "EDGE_CACHE_PURGE_PORT", "value": "8081"},
    ]


def test_vcl_orders_rules_longest_prefix_first_and_lists_the_acl() -> None:
    policy = CachePolicy(
        rules=(PathRule(prefix="/a/"), PathRule(prefix="/a/b.c/", kind="pass")),
        invalidation_cidrs=("10.0.0.0/8",),
    )
    vcl = render_vcl(policy)
    assert vcl.index('req.url ~ "^/a/b[.]c/"') < vcl.index('req.url ~ "^/a/"')
    assert '    "10.0.0.0"/8;' in vcl
    assert '    "10.244.0.0"/16;' not in vcl


def test_cacheable_prefixes_leave_out_pass_rules() -> None:
    assert cacheable_prefixes(EdgeCacheSpec()) == ["/products", "/static/"]
    policy = CachePolicy(rules=(PathRule(prefix="/a/"), PathRule(prefix="/a/private/", kind="pass")))
    assert cacheable_prefixes(EdgeCacheSpec(policy=policy)) == ["/a/"]


def test_debug_headers_can_be_switched_off() -> None:
    assert "X-Cache" in render_vcl(CachePolicy())
    assert "resp.http.X-Cache" not in render_vcl(CachePolicy(debug_headers=False))


def test_cdn_document_mirrors_the_policy() -> None:
    document = cdn_document(EdgeCacheSpec())
    assert [rule["path_prefix"] for rule in document["rules"]] == ["/products", "/static/"]
    static = document["rules"][1]
    assert static == {
        "path_prefix": "/static/",
        "action": "cache",
        "kind": "static",
        "default_ttl_seconds": 86400,
        "stale_while_revalidate_seconds": 60,
        "stale_if_error_seconds": 86400,
        "strip_cookies": True,
    }
    assert document["bypass"]["cookies"] == ["sid", "ryw"]
    assert document["bypass"]["websocket_upgrades"] == "passed through to the origin (Upgrade: websocket), any path"
    assert document["bypass"]["stream_paths"] == ["/ws", "/events"]
    assert document["cache_key"]["query"]["ignored_parameters"] == ["utm_*", "gclid", "fbclid"]
    assert document["origin_directives"]["precedence"][0] == "Surrogate-Control"
