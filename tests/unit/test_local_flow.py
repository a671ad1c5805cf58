"""`scaleladder-local up` and `down` end to end, with docker, kind, kubectl and pulumi as stubs.

The stubs answer version questions like the real tools, log every other call and succeed; the
probes answer as a machine without a cluster (for `up`) or with one and its stacks (for `down`)
would. The tests check the commands OUR flow runs, in order, and what it writes and prints.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.local import cli, cluster_config

NODES = ("scaleladder-control-plane", "scaleladder-worker", "scaleladder-worker2", "scaleladder-worker3")


def stub_tools(tmp_path: Path, cluster_exists: bool) -> tuple[dict[str, str], Path]:
    """A PATH with the four tools as logging stubs (and the system's sh, git); returns env and log."""
    log = tmp_path / "calls.log"
    folder = tmp_path / "bin"
    folder.mkdir()
    probe_exit = 0 if cluster_exists else 1
    scripts = {
        "docker": 'case "$*" in --version) echo "Docker version 28.2.2";; info*) echo 28.2.2 overlay2;; '
        '"image inspect"*) exit 1;; esac',
        "kind": f'case "$*" in version) echo "kind v0.30.0 go1.24.6";; "get kubeconfig"*) exit {probe_exit};; esac',
        "kubectl": 'case "$*" in "version --client -o json") echo \'{"clientVersion": {"gitVersion": "v1.34.1"}}\';;'
        ' *"get crd"*) echo \'{"items": []}\';; esac',
        "pulumi": 'case "$*" in version) echo v3.272.0;; esac',
    }
    for name, body in scripts.items():
        path = folder / name
        record = f'case "$*" in *version*|info*) ;; *) echo "{name} $*" >> {log};; esac'
        path.write_text(f"#!/bin/sh\n{record}\n{body}\n")
        path.chmod(0o755)
    env = {"PATH": f"{folder}:/usr/bin:/bin", "HOME": str(tmp_path), "SCALELADDER_HOME": str(tmp_path / "home")}
    return env, log


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for folder in ("stacks", "local", "services/sample", "images/postgres-patroni"):
        (root / folder).mkdir(parents=True)
    shutil.copy(cli.ROOT / "Pulumi.yaml", root / "Pulumi.yaml")
    shutil.copy(cluster_config.CONFIG, root / "local" / "kind-cluster.yaml")
    (root / "stacks" / "Pulumi.kind.yaml").write_text("config:\n  scaleladder:layer: cluster\n")
    (root / "stacks" / "Pulumi.phase1.yaml").write_text("config:\n  scaleladder:phase: 1\n")
    (root / "stacks" / "Pulumi.phase2.yaml").write_text("config:\n  scaleladder:phase: 2\n")
    (root / "services" / "sample" / "Dockerfile").write_text("FROM python:3.11.14-slim\n")
    (root / "images" / "postgres-patroni" / "Dockerfile").write_text("FROM postgres:15.18-bookworm\n")
    subprocess.run(["git", "-C", str(root), "init", "-q"], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    return root


def test_up_runs_the_whole_flow_in_order(tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env, log = stub_tools(tmp_path, cluster_exists=False)
    assert cli.main(["up", "--phase", "1"], root=repo, env=env) == 0
    out = capsys.readouterr().out
    built = dict(
        (match.group(2), match.group(1))
        for match in (re.search(r"\] build the image (\S+) from (\S+)$", line) for line in out.splitlines())
        if match
    )
    assert list(built) == ["services/sample", "images/postgres-patroni"]
    ref, pg_ref = built["services/sample"], built["images/postgres-patroni"]
    home = tmp_path / "home"
    kind_file, phase_file = home / "project" / "Pulumi.kind.yaml", home / "project" / "Pulumi.phase1.yaml"
    select = "stack select --create --secrets-provider passphrase"
    up = "--yes --skip-preview --non-interactive"
    assert log.read_text().splitlines() == [
        "kind get kubeconfig --name scaleladder",
        f"kind create cluster --config {repo}/local/kind-cluster.yaml --wait 5m",
        "kubectl --context kind-scaleladder wait --for=condition=Ready nodes --all --timeout=5m",
        f"pulumi {select} kind --cwd {home}/project --non-interactive",
        f"pulumi up --stack kind --config-file {kind_file} {up}",
        "kubectl --context kind-scaleladder wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io "
        "--timeout=5m",
        "kubectl --context kind-scaleladder wait --for=condition=Programmed gateway/edge -n scaleladder-gateway "
        "--timeout=5m",
        f"docker image inspect {ref}",
        f"docker build --tag {ref} services/sample",
        f"kind load docker-image {ref} --name scaleladder",
        *(f"docker exec {node} crictl inspecti docker.io/{ref}" for node in NODES),
        f"docker image inspect {pg_ref}",
        f"docker build --tag {pg_ref} images/postgres-patroni",
        f"kind load docker-image {pg_ref} --name scaleladder",
        *(f"docker exec {node} crictl inspecti docker.io/{pg_ref}" for node in NODES),
        f"pulumi {select} phase1 --cwd {home}/project --non-interactive",
        f"pulumi up --stack phase1 --config-file {phase_file} {up}",
        "kubectl --context kind-scaleladder wait --for=condition=Available deployment --all -n scaleladder-phase1 "
        "--timeout=10m",
        "kubectl --context kind-scaleladder wait --for=condition=Ready pod --all "
        "--field-selector=status.phase!=Succeeded -n scaleladder-phase1 --timeout=10m",
    ]
    assert ref.startswith("scaleladder/sample:") and len(ref.split(":")[1]) == 12
    assert pg_ref.startswith("scaleladder/postgres-patroni:") and len(pg_ref.split(":")[1]) == 12
    assert yaml.safe_load(phase_file.read_text())["config"] == {
        "scaleladder:phase": 1,
        "kubernetes:context": "kind-scaleladder",
        "scaleladder:web": {"image": ref},
        "scaleladder:postgres": {"ha": {"image": pg_ref}},
    }
    # the cluster layer's file gets no image
    assert yaml.safe_load(kind_file.read_text())["config"] == {
        "scaleladder:layer": "cluster",
        "kubernetes:context": "kind-scaleladder",
    }
    assert "[1/24] create kind cluster scaleladder (1 control plane, 3 workers in 3 zones)" in out
    assert "all 24 steps done in " in out
    assert "phase 1 is up in namespace scaleladder-phase1 on kind cluster scaleladder." in out
    assert (repo / "stacks" / "Pulumi.phase1.yaml").read_text() == "config:\n  scaleladder:phase: 1\n"


def test_down_tears_everything_down_in_order(tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env, log = stub_tools(tmp_path, cluster_exists=True)
    # kubectl's CRD listing is empty here: the delete-crds helper lists and finds nothing to delete
    assert cli.main(["down"], root=repo, env=env) == 0
    home = tmp_path / "home"
    project = f"--cwd {home}/project --non-interactive"
    calls = [line for line in log.read_text().splitlines() if not line.startswith(("pulumi stack select", "kind get"))]
    destroy = "--yes --skip-preview --non-interactive"
    assert calls == [
        f"pulumi destroy --stack phase2 --config-file {home}/project/Pulumi.phase2.yaml {destroy}",
        f"pulumi stack rm phase2 --yes --force {project}",
        f"pulumi destroy --stack phase1 --config-file {home}/project/Pulumi.phase1.yaml {destroy}",
        f"pulumi stack rm phase1 --yes --force {project}",
        f"pulumi destroy --stack kind --config-file {home}/project/Pulumi.kind.yaml {destroy}",
        f"pulumi stack rm kind --yes --force {project}",
        "kubectl --context kind-scaleladder get crd -o json",
        "kubectl --context kind-scaleladder delete namespace scaleladder-phase1 scaleladder-phase2 "
        "scaleladder-gateway envoy-gateway-system keda --ignore-not-found --wait --timeout=5m",
        "kind delete cluster --name scaleladder",
    ]
    assert "all 12 steps done in " in capsys.readouterr().out
