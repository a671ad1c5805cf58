"""The commands `up` and `down` would run, in order, without running any of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.local import cluster_config, image, plan, workspace
from components.local.cli import GATEWAY_NODE_PORT, ROOT
from components.local.plan import Step

IMAGE = "scaleladder/sample:0123456789ab"
POSTGRES_IMAGE = "scaleladder/postgres-patroni:ba9876543210"
IMAGES = (IMAGE, POSTGRES_IMAGE)


@pytest.fixture
def ctx(tmp_path: Path) -> plan.Context:
    space = workspace.Workspace(tmp_path / "home")
    return plan.Context(
        root=ROOT,
        cluster=cluster_config.load(GATEWAY_NODE_PORT),
        workspace=space,
        pulumi_env=workspace.pulumi_env(space, {}),
        python="/venv/bin/python",
    )


def index(steps: list[Step], *words: str) -> int:
    """Position of the first step whose command contains all `words` in order."""
    for number, step in enumerate(steps):
        text = " ".join(step.argv)
        if all(word in text for word in words):
            return number
    raise AssertionError(f"no step runs {words}: {[' '.join(s.argv) for s in steps]}")


def test_up_order(ctx: plan.Context) -> None:
    steps = plan.up(ctx, 3, IMAGES)
    order = [
        index(steps, "kind create cluster"),
        index(steps, "wait --for=condition=Ready nodes"),
        index(steps, "pulumi up --stack kind"),
        index(steps, "apiservice/v1beta1.metrics.k8s.io"),
        index(steps, "gateway/edge -n scaleladder-gateway"),
        index(steps, "docker build --tag", IMAGE),
        index(steps, "kind load docker-image", IMAGE),
        index(steps, "crictl inspecti", IMAGE),
        index(steps, "docker build --tag", POSTGRES_IMAGE),
        index(steps, "kind load docker-image", POSTGRES_IMAGE),
        index(steps, "crictl inspecti", POSTGRES_IMAGE),
        index(steps, "pulumi up --stack phase3"),
        index(steps, "deployment --all -n scaleladder-phase3"),
        index(steps, "pod --all"),
    ]
    assert order == sorted(order)


def test_cluster_is_created_from_the_file_or_reused(ctx: plan.Context) -> None:
    create = plan.up(ctx, 3, IMAGES)[0]
    assert create.argv == ("kind", "create", "cluster", "--config", str(cluster_config.CONFIG), "--wait", "5m")
    assert create.skip_if == ("kind", "get", "kubeconfig", "--name", "scaleladder")


@pytest.mark.parametrize(("ref", "context"), [(IMAGE, "services/sample"), (POSTGRES_IMAGE, "images/postgres-patroni")])
def test_each_image_is_built_once_from_its_context_loaded_and_checked_on_every_node(
    ctx: plan.Context, ref: str, context: str
) -> None:
    steps = plan.up(ctx, 3, IMAGES)
    builds = [step for step in steps if step.argv[:2] == ("docker", "build")]
    assert [step.argv for step in builds] == [
        ("docker", "build", "--tag", IMAGE, "services/sample"),
        ("docker", "build", "--tag", POSTGRES_IMAGE, "images/postgres-patroni"),
    ]
    build = steps[index(steps, "docker build --tag", ref)]
    assert build.argv == ("docker", "build", "--tag", ref, context)
    assert (build.cwd, build.skip_if) == (ROOT, ("docker", "image", "inspect", ref))
    assert steps[index(steps, "kind load", ref)].argv == ("kind", "load", "docker-image", ref, "--name", "scaleladder")
    checks = [step.argv for step in steps if "crictl" in step.argv and f"docker.io/{ref}" in step.argv]
    assert checks == [("docker", "exec", node, "crictl", "inspecti", f"docker.io/{ref}") for node in ctx.cluster.nodes]


def test_the_contexts_are_the_kit_builds() -> None:
    assert [(build.repository, str(build.context), build.setting) for build in image.BUILDS] == [
        ("scaleladder/sample", "services/sample", ("web", "image")),
        ("scaleladder/postgres-patroni", "images/postgres-patroni", ("postgres", "ha", "image")),
    ]
    for build in image.BUILDS:
        assert (ROOT / build.context / "Dockerfile").is_file(), build


def test_no_command_uses_a_latest_tag(ctx: plan.Context) -> None:
    for step in plan.up(ctx, 6, IMAGES):
        assert not any(arg.endswith(":latest") for arg in step.argv), step


def test_every_kubectl_names_the_kind_context(ctx: plan.Context) -> None:
    steps = plan.up(ctx, 3, IMAGES) + plan.down(ctx, ["phase1", "phase3"], keep_cluster=False)
    for step in steps:
        if step.argv[0] == "kubectl":
            assert step.argv[1:3] == ("--context", "kind-scaleladder"), step


def test_stacks_deploy_with_generated_config_outside_the_repository(ctx: plan.Context) -> None:
    steps = plan.up(ctx, 3, IMAGES)
    generated = str(ctx.workspace.stack_file("phase3"))
    assert steps[index(steps, "workspace phase3")].argv == (
        "/venv/bin/python",
        "-m",
        "components.local",
        "--root",
        str(ROOT),
        "workspace",
        "phase3",
        "--context",
        "kind-scaleladder",
        "--image",
        IMAGE,
        "--image",
        POSTGRES_IMAGE,
    )
    select = steps[index(steps, "stack select --create", "phase3")]
    assert select.argv[-3:] == ("--cwd", str(ctx.workspace.project), "--non-interactive")
    assert "--secrets-provider" in select.argv
    deploy = steps[index(steps, "pulumi up --stack phase3")]
    assert deploy.argv == (
        "pulumi",
        "up",
        "--stack",
        "phase3",
        "--config-file",
        generated,
        "--yes",
        "--skip-preview",
        "--non-interactive",
    )
    assert deploy.cwd == ROOT
    assert not generated.startswith(str(ROOT))
    # nothing writes config into the checked-in stack files
    assert not any(step.argv[:3] == ("pulumi", "config", "set") for step in steps)
    # the cluster layer gets no image
    assert "--image" not in steps[index(steps, "workspace kind")].argv


def test_pulumi_runs_against_a_local_backend_with_a_dev_passphrase(ctx: plan.Context) -> None:
    for step in plan.up(ctx, 2, IMAGES):
        if step.argv[0] == "pulumi":
            assert step.env["PULUMI_BACKEND_URL"] == f"file://{ctx.workspace.home}/state"
            assert step.env["PULUMI_CONFIG_PASSPHRASE"] == workspace.DEV_PASSPHRASE


def test_a_passphrase_or_backend_of_the_caller_wins(tmp_path: Path) -> None:
    space = workspace.Workspace(tmp_path)
    env = workspace.pulumi_env(space, {"PULUMI_CONFIG_PASSPHRASE_FILE": "/secret", "PULUMI_BACKEND_URL": "s3://b"})
    assert env == {"PULUMI_BACKEND_URL": "s3://b", "PULUMI_SKIP_UPDATE_CHECK": "true"}


def test_down_order(ctx: plan.Context) -> None:
    steps = plan.down(ctx, ["phase1", "phase2", "phase3"], keep_cluster=False)
    order = [
        index(steps, "pulumi destroy --stack phase3"),
        index(steps, "pulumi destroy --stack phase2"),
        index(steps, "pulumi destroy --stack phase1"),
        index(steps, "pulumi destroy --stack kind"),
        index(steps, "delete-crds"),
        index(steps, "delete namespace"),
        index(steps, "kind delete cluster"),
    ]
    assert order == sorted(order)
    assert steps[-1].argv == ("kind", "delete", "cluster", "--name", "scaleladder")


def test_down_deletes_addon_crds_and_leftover_namespaces(ctx: plan.Context) -> None:
    steps = plan.down(ctx, ["phase1", "phase3"], keep_cluster=True)
    crds = steps[index(steps, "delete-crds")].argv
    assert crds[crds.index("delete-crds") :] == (
        "delete-crds",
        "--context",
        "kind-scaleladder",
        "--group",
        "gateway.networking.k8s.io",
        "--group",
        "gateway.envoyproxy.io",
        "--group",
        "keda.sh",
        "--group",
        "eventing.keda.sh",
    )
    namespaces = steps[index(steps, "delete namespace")].argv
    assert namespaces[4:] == (
        "namespace",
        "scaleladder-phase1",
        "scaleladder-phase3",
        "scaleladder-gateway",
        "envoy-gateway-system",
        "keda",
        "--ignore-not-found",
        "--wait",
        "--timeout=5m",
    )
    assert "kube-system" not in namespaces
    assert not any(step.argv[:3] == ("kind", "delete", "cluster") for step in steps)


def test_destroy_applies_only_to_existing_stacks_on_an_existing_cluster(ctx: plan.Context) -> None:
    steps = plan.down(ctx, ["phase2"], keep_cluster=False)
    exists = ("pulumi", "stack", "select", "phase2", "--cwd", str(ctx.workspace.project), "--non-interactive")
    cluster = ("kind", "get", "kubeconfig", "--name", "scaleladder")
    assert steps[index(steps, "pulumi destroy --stack phase2")].only_if == (exists, cluster)
    remove = steps[index(steps, "stack rm phase2")]
    assert remove.only_if == (exists,)
    assert "--force" in remove.argv
    # the cluster is deleted whether or not the stacks were there
    assert steps[-1].only_if == ()
