"""Tool detection and its messages, against a fake PATH of stub executables.

The stubs print what the real tools print for their version commands; the tests check OUR
detection logic (found, version parsed, compared, engine reachable), not the tools.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.local import prerequisites
from components.local.prerequisites import Finding

HEALTHY = {
    "docker": 'case "$1" in --version) echo "Docker version 28.2.2, build e6534b4";; '
    'info) echo "28.2.2 overlay2";; esac',
    "kind": 'echo "kind v0.30.0 go1.24.6 linux/amd64"',
    "kubectl": 'echo \'{"clientVersion": {"major": "1", "minor": "34", "gitVersion": "v1.34.1"}}\'',
    "pulumi": 'echo "v3.272.0"',
}


def stubs(tmp_path: Path, scripts: dict[str, str]) -> dict[str, str]:
    """A PATH holding only the given tools, each a shell script."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return {"PATH": str(folder)}


def by_tool(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.tool: finding for finding in findings}


def test_everything_present_and_new_enough(tmp_path: Path) -> None:
    findings = prerequisites.check(stubs(tmp_path, HEALTHY))
    assert [(f.tool, f.status) for f in findings] == [
        ("docker", "ok"),
        ("docker engine", "ok"),
        ("kind", "ok"),
        ("kubectl", "ok"),
        ("pulumi", "ok"),
    ]
    assert prerequisites.missing(findings) == []
    assert str(findings[2]) == f"[ok  ] kind: 0.30.0 at {tmp_path}/bin/kind"


def test_missing_tools_are_named_with_install_hints(tmp_path: Path) -> None:
    env = stubs(tmp_path, {"docker": HEALTHY["docker"], "kubectl": HEALTHY["kubectl"]})
    findings = prerequisites.check(env)
    kind = by_tool(findings)["kind"]
    assert (kind.status, kind.detail) == ("missing", "not found on PATH")
    assert str(kind) == (
        "[FAIL] kind: not found on PATH\n       hint: go install sigs.k8s.io/kind@v0.30.0, or a release binary: "
        "https://kind.sigs.k8s.io/docs/user/quick-start/"
    )
    assert "get.pulumi.com" in str(by_tool(findings)["pulumi"])
    assert prerequisites.missing(findings) == ["kind", "pulumi"]


def test_docker_client_without_a_running_engine(tmp_path: Path) -> None:
    docker = (
        'case "$1" in --version) echo "Docker version 28.2.2, build e6534b4";; '
        'info) echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1;; esac'
    )
    findings = prerequisites.check(stubs(tmp_path, {**HEALTHY, "docker": docker}))
    engine = by_tool(findings)["docker engine"]
    assert engine.status == "not running"
    assert engine.detail == (
        "`docker info` could not reach it (Cannot connect to the Docker daemon at unix:///var/run/docker.sock.)"
    )
    assert "systemctl start docker" in engine.hint
    assert prerequisites.missing(findings) == ["docker engine"]


def test_no_docker_at_all_is_reported_as_the_missing_engine(tmp_path: Path) -> None:
    findings = prerequisites.check(stubs(tmp_path, {k: v for k, v in HEALTHY.items() if k != "docker"}))
    assert "docker engine" not in by_tool(findings)
    assert prerequisites.missing(findings) == ["docker engine"]


def test_kind_older_than_the_node_image_needs(tmp_path: Path) -> None:
    findings = prerequisites.check(stubs(tmp_path, {**HEALTHY, "kind": 'echo "kind v0.29.0 go1.24.2 linux/amd64"'}))
    kind = by_tool(findings)["kind"]
    assert (kind.status, kind.detail) == ("too old", f"0.29.0 at {tmp_path}/bin/kind, need >= 0.30.0")


def test_pulumi_cli_must_be_at_least_the_pinned_sdk(tmp_path: Path) -> None:
    findings = prerequisites.check(stubs(tmp_path, {**HEALTHY, "pulumi": 'echo "v3.200.1"'}))
    pulumi = by_tool(findings)["pulumi"]
    assert pulumi.status == "too old"
    assert pulumi.detail.endswith("need >= 3.272.0")
    assert "sh -s -- --version 3.272.0" in pulumi.hint


def test_kubectl_far_from_the_cluster_version_is_a_warning_not_a_blocker(tmp_path: Path) -> None:
    kubectl = 'echo \'{"clientVersion": {"gitVersion": "v1.37.1"}}\''
    findings = prerequisites.check(stubs(tmp_path, {**HEALTHY, "kubectl": kubectl}))
    finding = by_tool(findings)["kubectl"]
    assert finding.status == "warning"
    assert "more than one minor version newer than the cluster (1.34)" in finding.detail
    assert prerequisites.missing(findings) == []


def test_kubectl_older_than_the_skew_allows(tmp_path: Path) -> None:
    kubectl = 'echo \'{"clientVersion": {"gitVersion": "v1.31.0"}}\''
    finding = by_tool(prerequisites.check(stubs(tmp_path, {**HEALTHY, "kubectl": kubectl})))["kubectl"]
    assert (finding.status, finding.detail) == ("too old", f"1.31.0 at {tmp_path}/bin/kubectl, need >= 1.33.0")


def test_a_tool_that_fails_to_report_its_version(tmp_path: Path) -> None:
    findings = prerequisites.check(stubs(tmp_path, {**HEALTHY, "pulumi": 'echo "error: corrupt install" >&2; exit 3'}))
    pulumi = by_tool(findings)["pulumi"]
    assert pulumi.status == "broken"
    assert pulumi.detail == f"`pulumi version` failed (error: corrupt install) at {tmp_path}/bin/pulumi"


@pytest.mark.parametrize(
    ("text", "version"),
    [("kind v0.30.0 go1.24.6 linux/amd64", (0, 30, 0)), ("v3.272.0", (3, 272, 0)), ("no version", None)],
)
def test_parse_version(text: str, version: tuple[int, int, int] | None) -> None:
    assert prerequisites.parse_version(text) == version


def test_containerd_image_store_is_a_warning_naming_the_kind_load_pitfall(tmp_path: Path) -> None:
    docker = (
        'case "$1" in --version) echo "Docker version 29.1.3, build f52814d";; info) echo "29.1.3 overlayfs";; esac'
    )
    engine = by_tool(prerequisites.check(stubs(tmp_path, {**HEALTHY, "docker": docker})))["docker engine"]
    assert engine.status == "warning"
    assert engine.detail.startswith("server 29.1.3 stores images in containerd (storage driver overlayfs)")
    assert "content digest ... not found" in engine.detail
    assert not engine.blocking
