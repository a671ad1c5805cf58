"""`scaleladder-local`: argument errors, the printed plan, refusal without tools, helpers, the guide."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.local import cli, cluster_config, crds, guide, image
from components.local.cli import GATEWAY_NODE_PORT, ROOT


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SCALELADDER_HOME": str(tmp_path / "home")}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository-like folder with the kind file, a phase1 stack and the git-tracked build contexts:
    the sample's without its Dockerfile, the Postgres image's with it."""
    return make_repo(tmp_path, dockerfiles=[image.POSTGRES])


def make_repo(tmp_path: Path, dockerfiles: list[image.Build]) -> Path:
    root = tmp_path / "repo"
    (root / "stacks").mkdir(parents=True)
    (root / "local").mkdir()
    shutil.copy(cluster_config.CONFIG, root / "local" / "kind-cluster.yaml")
    (root / "stacks" / "Pulumi.phase1.yaml").write_text("config: {}\n")
    (root / "services" / "sample").mkdir(parents=True)
    (root / "services" / "sample" / "app.py").write_text("print('hi')\n")
    (root / "images" / "postgres-patroni").mkdir(parents=True)
    (root / "images" / "postgres-patroni" / "requirements.txt").write_text("patroni==4.1.5\n")
    for build in dockerfiles:
        (root / build.context / "Dockerfile").write_text("FROM python:3.11.14-slim\n")
    subprocess.run(["git", "-C", str(root), "init", "-q"], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    return root


def test_plan_up_prints_commands_and_runs_nothing(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "up", "--phase", "2"], env=env) == 0
    out = capsys.readouterr().out
    assert out.startswith("# 1. create kind cluster scaleladder (1 control plane, 3 workers in 3 zones)\n")
    assert "#    skipped if: kind get kubeconfig --name scaleladder\n" in out
    assert "pulumi up --stack phase2 --config-file " in out
    # both of the kit's images are built from this checkout and handed to the phase stack
    refs = image.image_refs(ROOT)
    for build, ref in refs.items():
        assert f"docker build --tag {ref} {build.context}" in out
    assert f"--image {refs[image.WEB]} --image {refs[image.POSTGRES]}" in out
    assert "PULUMI_CONFIG_PASSPHRASE=scaleladder-local-development" in out
    assert not (Path(env["SCALELADDER_HOME"]) / "project").exists()


def test_plan_down_lists_every_checked_in_phase_stack(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "down", "--keep-cluster"], env=env) == 0
    out = capsys.readouterr().out
    for stack in cli.phase_stacks(ROOT):
        assert f"pulumi destroy --stack {stack} " in out
    assert "kind delete cluster" not in out


def test_phase_out_of_range(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["up", "--phase", "7"], env=env)
    assert exit_.value.code == 2
    assert "argument --phase: invalid choice: 7 (choose from 1, 2, 3, 4, 5, 6)" in capsys.readouterr().err


def test_phase_without_a_stack_file(repo: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "up", "--phase", "5"], root=repo, env=env) == 2
    assert capsys.readouterr().err == (
        "scaleladder-local: --phase 5: there is no stacks/Pulumi.phase5.yaml yet; phase stacks: phase1\n"
    )


def test_up_refuses_before_any_step_when_tools_are_missing(
    tmp_path: Path, repo: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "services" / "sample" / "Dockerfile").write_text("FROM python:3.11.14-slim\n")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    assert cli.main(["up", "--phase", "1"], root=repo, env={**env, "PATH": str(empty)}) == 2
    out = capsys.readouterr().out
    assert "[FAIL] docker: not found on PATH" in out
    assert (
        out.splitlines()[-1]
        == "missing: docker engine, kind, kubectl, pulumi (see the hints above; docs/local.md lists versions)"
    )
    assert "[1/" not in out
    assert not (Path(env["SCALELADDER_HOME"]) / "project").exists()


def test_workspace_helper_writes_the_generated_stack_file(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    stack = cli.phase_stacks(ROOT)[0]
    web, pg = "scaleladder/sample:0123456789ab", "scaleladder/postgres-patroni:ba9876543210"
    args = ["workspace", stack, "--context", "kind-scaleladder", "--image", web, "--image", pg]
    assert cli.main(args, env=env) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == Path(env["SCALELADDER_HOME"]) / "project" / f"Pulumi.{stack}.yaml"
    config = yaml.safe_load(path.read_text())["config"]
    assert config["scaleladder:web"]["image"] == web
    assert config["scaleladder:postgres"]["ha"]["image"] == pg


def test_workspace_helper_refuses_an_image_the_kit_does_not_build(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    stack = cli.phase_stacks(ROOT)[0]
    assert cli.main(["workspace", stack, "--context", "kind-scaleladder", "--image", "x/y:1"], env=env) == 2
    assert capsys.readouterr().err == (
        "scaleladder-local: --image 'x/y:1': not one of the kit's images "
        "(scaleladder/sample:<tag>, scaleladder/postgres-patroni:<tag>)\n"
    )
    assert not (Path(env["SCALELADDER_HOME"]) / "project" / f"Pulumi.{stack}.yaml").exists()


def test_crds_are_chosen_by_group() -> None:
    listing = {
        "items": [
            {
                "metadata": {"name": "httproutes.gateway.networking.k8s.io"},
                "spec": {"group": "gateway.networking.k8s.io"},
            },
            {"metadata": {"name": "envoyproxies.gateway.envoyproxy.io"}, "spec": {"group": "gateway.envoyproxy.io"}},
            {
                "metadata": {"name": "gateways.gateway.networking.k8s.io"},
                "spec": {"group": "gateway.networking.k8s.io"},
            },
            {"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com"}},
        ]
    }
    assert crds.names_in_groups(listing, ["gateway.networking.k8s.io", "gateway.envoyproxy.io"]) == [
        "envoyproxies.gateway.envoyproxy.io",
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
    ]


def test_guide_for_a_routed_phase() -> None:
    text = guide.after_up(cluster_config.load(GATEWAY_NODE_PORT), 3)
    assert "  browse:   http://phase3.localtest.me:8080/products" in text
    assert "  curl:     curl -H 'Host: phase3.localtest.me' http://localhost:8080/healthz" in text
    assert "kubectl --context kind-scaleladder get deploy,sts,svc,hpa,pdb,pods -n scaleladder-phase3 -o wide" in text


def test_guide_for_a_phase_without_a_route() -> None:
    text = guide.after_up(cluster_config.load(GATEWAY_NODE_PORT), 2)
    assert "kubectl --context kind-scaleladder port-forward -n scaleladder-phase2 svc/web 8081:80" in text
    assert "localtest.me" not in text


@pytest.mark.parametrize("missing", image.BUILDS, ids=lambda build: build.repository)
def test_up_needs_every_dockerfile(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], missing: image.Build
) -> None:
    root = make_repo(tmp_path, dockerfiles=[build for build in image.BUILDS if build != missing])
    assert cli.main(["up", "--phase", "1"], root=root, env=env) == 2
    assert capsys.readouterr().err == (
        f"scaleladder-local: no {root}/{missing.context}/Dockerfile: the image {missing.repository} cannot be built\n"
    )
    assert not (Path(env["SCALELADDER_HOME"]) / "project").exists()


def test_delete_crds_lists_then_deletes_only_the_given_groups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stub kubectl answers `get crd -o json` and records the delete it is asked for."""
    calls = tmp_path / "calls"
    listing = tmp_path / "crds.json"
    listing.write_text(
        '{"items": ['
        '{"metadata": {"name": "gateways.gateway.networking.k8s.io"}, "spec": {"group": "gateway.networking.k8s.io"}},'
        '{"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com"}}]}'
    )
    stub = tmp_path / "bin" / "kubectl"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *"get crd"*) cat {listing};; esac\n')
    stub.chmod(0o755)
    env = {"PATH": f"{stub.parent}:/usr/bin:/bin"}
    assert cli.main(["delete-crds", "--context", "kind-x", "--group", "gateway.networking.k8s.io"], env=env) == 0
    assert calls.read_text().splitlines() == [
        "--context kind-x get crd -o json",
        "--context kind-x delete crd gateways.gateway.networking.k8s.io --wait --timeout=5m",
    ]
    assert "deleting 1 CRDs: gateways.gateway.networking.k8s.io" in capsys.readouterr().out
