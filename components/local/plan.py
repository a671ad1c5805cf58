"""The local flow as data: `up` and `down` are lists of commands, each with what it is for.

Nothing here runs anything: the runner executes a plan, `scaleladder-local plan` prints it, and
the tests read it. Every step is a command a person could type; a step may be skipped when a
probe says its work is already done (`skip_if`), or only run when probes say it applies
(`only_if`, e.g. destroying a stack only if it exists and its cluster is still there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.local.cluster_config import KindCluster
from components.local.workspace import Workspace, image_build

Argv = tuple[str, ...]
CLUSTER_STACK = "kind"
GATEWAY = ("edge", "scaleladder-gateway")  # the cluster layer's shared Gateway: name, namespace
METRICS_API = "v1beta1.metrics.k8s.io"
# CRD groups the cluster layer's Helm charts install; `helm uninstall` leaves CRDs behind
ADDON_CRD_GROUPS = ("gateway.networking.k8s.io", "gateway.envoyproxy.io", "keda.sh", "eventing.keda.sh")
# namespaces Helm created for those charts (charts/*.yaml); uninstalling a release leaves them
ADDON_NAMESPACES = ("envoy-gateway-system", "keda")


@dataclass(frozen=True)
class Step:
    """One command of the flow."""

    description: str
    argv: Argv
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    skip_if: Argv | None = None
    only_if: tuple[Argv, ...] = ()
    timeout: float = 600.0


@dataclass(frozen=True)
class Context:
    """Everything a plan depends on, resolved by the CLI before planning."""

    root: Path
    cluster: KindCluster
    workspace: Workspace
    pulumi_env: dict[str, str]
    python: str
    pulumi: Argv = ("pulumi",)
    """How pulumi runs: the CLI itself (kind), or `scaleladder-local pulumi` (the simulated cluster)."""
    kube_context: str = ""
    """The kubeconfig context stacks deploy to; empty means the kind cluster's."""
    cluster_exists: Argv | None = None
    """A probe that exits 0 only when the cluster is there; None means kind's."""
    cluster_stack_args: tuple[str, ...] = ()
    """Extra arguments of the `workspace` helper for the cluster layer's stack file (`--crds DIR`)."""

    @property
    def context(self) -> str:
        return self.kube_context or self.cluster.context

    @property
    def exists(self) -> Argv:
        return self.cluster_exists or ("kind", "get", "kubeconfig", "--name", self.cluster.name)


def phase_stack(phase: int) -> str:
    return f"phase{phase}"


def namespace(stack: str) -> str:
    """Where a phase stack deploys (the lead's convention: scaleladder-<stack>)."""
    return f"scaleladder-{stack}"


def kubectl(ctx: Context, *args: str) -> Argv:
    """kubectl pinned to the plan's cluster context (kind or simulated), never whatever context is current."""
    return ("kubectl", "--context", ctx.context, *args)


def stack_exists(ctx: Context, stack: str) -> Argv:
    """Exits 0 only when the stack exists in the local backend."""
    return (*ctx.pulumi, "stack", "select", stack, "--cwd", str(ctx.workspace.project), "--non-interactive")


def helper(ctx: Context, *args: str) -> Argv:
    """A step the kit does itself (`python -m components.local ...`), so that plans stay commands."""
    return (ctx.python, "-m", "components.local", "--root", str(ctx.root), *args)


def workspace_env(ctx: Context) -> dict[str, str]:
    """The `workspace` helper writes into the plan's workspace, whatever SCALELADDER_HOME says."""
    return {"SCALELADDER_HOME": str(ctx.workspace.home)}


def pulumi_update(ctx: Context, verb: str, stack: str, config: str) -> Argv:
    """`pulumi up|destroy` of `stack` with its generated config file, unattended."""
    return (
        *ctx.pulumi,
        verb,
        "--stack",
        stack,
        "--config-file",
        config,
        "--yes",
        "--skip-preview",
        "--non-interactive",
    )


def deploy_stack(ctx: Context, stack: str, images: Sequence[str] = ()) -> list[Step]:
    """Write the stack's generated config, create or select the stack, `pulumi up`."""
    config = str(ctx.workspace.stack_file(stack))
    extra = ctx.cluster_stack_args if stack == CLUSTER_STACK else ()
    prepare = [
        "workspace",
        stack,
        "--context",
        ctx.context,
        *(arg for ref in images for arg in ("--image", ref)),
        *extra,
    ]
    return [
        Step(
            f"write {config} (stacks/Pulumi.{stack}.yaml + kube context{' + images' if images else ''})",
            helper(ctx, *prepare),
            env=workspace_env(ctx),
            cwd=ctx.root,
        ),
        Step(
            f"create or select Pulumi stack {stack} (local backend, passphrase secrets)",
            (
                *ctx.pulumi,
                "stack",
                "select",
                "--create",
                "--secrets-provider",
                "passphrase",
                stack,
                "--cwd",
                str(ctx.workspace.project),
                "--non-interactive",
            ),
            env=ctx.pulumi_env,
        ),
        Step(
            f"pulumi up {stack}",
            pulumi_update(ctx, "up", stack, config),
            env=ctx.pulumi_env,
            cwd=ctx.root,
            timeout=1800.0,
        ),
    ]


def cluster_up(ctx: Context) -> list[Step]:
    """Create or reuse the kind cluster, deploy the cluster layer, wait for metrics and the Gateway."""
    gateway, gateway_ns = GATEWAY
    return [
        Step(
            f"create kind cluster {ctx.cluster.name} (1 control plane, 3 workers in 3 zones)",
            ("kind", "create", "cluster", "--config", str(ctx.cluster.path), "--wait", "5m"),
            skip_if=ctx.exists,
            timeout=900.0,
        ),
        Step(
            "wait for every node to be Ready",
            kubectl(ctx, "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=5m"),
        ),
        *deploy_stack(ctx, CLUSTER_STACK),
        Step(
            "wait for metrics-server to serve the metrics API (the HPA reads it)",
            kubectl(ctx, "wait", "--for=condition=Available", f"apiservice/{METRICS_API}", "--timeout=5m"),
        ),
        Step(
            f"wait for the shared Gateway {gateway_ns}/{gateway} to be programmed",
            kubectl(ctx, "wait", "--for=condition=Programmed", f"gateway/{gateway}", "-n", gateway_ns, "--timeout=5m"),
        ),
    ]


def image_loaded(ctx: Context, images: Sequence[str]) -> list[Step]:
    """Build each image unless it exists, load it into the nodes, check every node has it."""
    steps = []
    for ref in images:
        context = str(image_build(ref).context)
        steps += [
            Step(
                f"build the image {ref} from {context}",
                ("docker", "build", "--tag", ref, context),
                cwd=ctx.root,
                skip_if=("docker", "image", "inspect", ref),
                timeout=1200.0,
            ),
            Step(
                f"load {ref} into every node (nodes never pull it)",
                ("kind", "load", "docker-image", ref, "--name", ctx.cluster.name),
            ),
            *(
                Step(
                    f"check that {node} has {ref}",
                    ("docker", "exec", node, "crictl", "inspecti", f"docker.io/{ref}"),
                )
                for node in ctx.cluster.nodes
            ),
        ]
    return steps


def phase_up(ctx: Context, phase: int, images: Sequence[str]) -> list[Step]:
    """Deploy the phase stack with these images and wait until its pods serve."""
    stack = phase_stack(phase)
    ns = namespace(stack)
    return [
        *deploy_stack(ctx, stack, images),
        Step(
            f"wait for every Deployment in {ns} to be Available",
            kubectl(ctx, "wait", "--for=condition=Available", "deployment", "--all", "-n", ns, "--timeout=10m"),
        ),
        Step(
            f"wait for every running pod in {ns} to be Ready",
            kubectl(
                ctx,
                "wait",
                "--for=condition=Ready",
                "pod",
                "--all",
                "--field-selector=status.phase!=Succeeded",
                "-n",
                ns,
                "--timeout=10m",
            ),
        ),
    ]


def up(ctx: Context, phase: int, images: Sequence[str]) -> list[Step]:
    """Cluster and cluster layer, images, phase stack: in that order."""
    return [*cluster_up(ctx), *image_loaded(ctx, images), *phase_up(ctx, phase, images)]


def destroy_stack(ctx: Context, stack: str) -> list[Step]:
    """`pulumi destroy` while the cluster is there, then forget the stack."""
    config = str(ctx.workspace.stack_file(stack))
    extra = ctx.cluster_stack_args if stack == CLUSTER_STACK else ()
    return [
        Step(
            f"write {config} for the teardown",
            helper(ctx, "workspace", stack, "--context", ctx.context, *extra),
            env={**ctx.pulumi_env, **workspace_env(ctx)},
            cwd=ctx.root,
            only_if=(stack_exists(ctx, stack),),
        ),
        Step(
            f"pulumi destroy {stack}",
            pulumi_update(ctx, "destroy", stack, config),
            env=ctx.pulumi_env,
            cwd=ctx.root,
            only_if=(stack_exists(ctx, stack), ctx.exists),
            timeout=1800.0,
        ),
        Step(
            f"remove stack {stack} from the local backend",
            (
                *ctx.pulumi,
                "stack",
                "rm",
                stack,
                "--yes",
                "--force",
                "--cwd",
                str(ctx.workspace.project),
                "--non-interactive",
            ),
            env=ctx.pulumi_env,
            only_if=(stack_exists(ctx, stack),),
        ),
    ]


def down(ctx: Context, phase_stacks: list[str], keep_cluster: bool) -> list[Step]:
    """Workloads (every phase stack, highest first), add-ons and their CRDs, namespaces, cluster."""
    steps = [step for stack in sorted(phase_stacks, reverse=True) for step in destroy_stack(ctx, stack)]
    steps += destroy_stack(ctx, CLUSTER_STACK)
    crd_groups = [arg for group in ADDON_CRD_GROUPS for arg in ("--group", group)]
    steps.append(
        Step(
            "delete the add-ons' CRDs (Helm leaves them behind)",
            helper(ctx, "delete-crds", "--context", ctx.context, *crd_groups),
            cwd=ctx.root,
            only_if=(ctx.exists,),
        )
    )
    leftover = [namespace(stack) for stack in sorted(phase_stacks)] + [GATEWAY[1], *ADDON_NAMESPACES]
    steps.append(
        Step(
            "delete the kit's namespaces that are left",
            kubectl(ctx, "delete", "namespace", *leftover, "--ignore-not-found", "--wait", "--timeout=5m"),
            only_if=(ctx.exists,),
        )
    )
    if not keep_cluster:
        steps.append(
            Step(f"delete kind cluster {ctx.cluster.name}", ("kind", "delete", "cluster", "--name", ctx.cluster.name))
        )
    return steps
