"""The simulated cluster: a real Kubernetes control plane on loopback, with kwok's simulated nodes and pods.

No Docker needed: etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the
toolchain's binaries (`scaleladder-local toolchain`), started by kwokctl on 127.0.0.1 only, and
kwok plays the kubelet of every node: pods are scheduled by the real scheduler and reported
Ready, but no image is pulled, no container runs, no probe is executed and no packet reaches a
pod. The nodes are those of local/kind-cluster.yaml (a tainted control plane, three workers in
three zones) with the allocatable of a laptop's Docker VM, and claims are bound by the
controller-manager's host-path provisioner. Stacks deploy with the real Pulumi engine and
provider; the cluster layer installs only its add-ons' CRDs (no chart can be fetched here).

scaleladder-local sim up [--phase N]   start the cluster (or reuse it), the cluster layer, phase N
scaleladder-local sim down             stop every process of the cluster and forget its stacks
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from components.local import cluster_config, image, plan, workspace
from components.local.plan import Argv, Step
from components.local.toolchain import Toolchain

NAME = "scaleladder-sim"
CONTEXT = f"kwok-{NAME}"  # the context kwokctl writes into the kubeconfig
ALLOCATABLE = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"}
"""What each kind node reports on a laptop whose Docker VM has 4 CPUs and 8 GiB: all of it."""
STORAGE_CLASS = "standard"  # kind's default class has this name too
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
NODE_ADDRESS_BASE = "127.0.1."  # node addresses on loopback: nothing is sent to them, and if it were, it stays here
START_TIMEOUT = "3m"


def home(env: Mapping[str, str]) -> Path:
    """Everything the simulated cluster keeps: kwokctl's workdir, Pulumi's state, the stack files."""
    return workspace.Workspace.from_env(env).home / "sim"


def kwokctl_config(tools: Toolchain) -> list[dict[str, Any]]:
    """kwokctl's configuration: the toolchain's binaries, loopback only, the host-path provisioner on."""
    options = {
        "runtime": "binary",
        "bindAddress": "127.0.0.1",  # kwokctl's default is 0.0.0.0
        "kubeVersion": tools.family("kubernetes").version,
        "etcdBinary": str(tools.binary("etcd")),
        "kubeApiserverBinary": str(tools.binary("kube-apiserver")),
        "kubeControllerManagerBinary": str(tools.binary("kube-controller-manager")),
        "kubeSchedulerBinary": str(tools.binary("kube-scheduler")),
        "kwokControllerBinary": str(tools.binary("kwok")),
        "kubectlBinary": str(tools.binary("kubectl")),
    }
    provisioner = {"key": "enable-hostpath-provisioner", "value": "true"}
    return [
        {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": options,
            "componentsPatches": [{"name": "kube-controller-manager", "extraArgs": [provisioner]}],
        }
    ]


def nodes(kind_document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Node per node of the kind file, named as kind names them, with its role, labels and taint."""
    names = cluster_config.node_containers(NAME, dict(kind_document))
    found = []
    for index, (name, node) in enumerate(zip(names, kind_document["nodes"], strict=True)):
        control_plane = node["role"] == "control-plane"
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            **({"node-role.kubernetes.io/control-plane": ""} if control_plane else {}),
            **node.get("labels", {}),
        }
        found.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                # kwok manages it: heartbeats, Ready, and the pods bound to it
                "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
                "spec": {"taints": [CONTROL_PLANE_TAINT]} if control_plane else {},
                "status": {
                    "allocatable": ALLOCATABLE,
                    "capacity": ALLOCATABLE,
                    "addresses": [{"type": "InternalIP", "address": f"{NODE_ADDRESS_BASE}{index + 1}"}],
                    "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
                },
            }
        )
    return found


def storage_class() -> dict[str, Any]:
    """The default class: claims are provisioned at once by the controller-manager's host-path provisioner."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def context(root: Path, env: Mapping[str, str], tools: Toolchain) -> plan.Context:
    """The plan context of the simulated cluster: its own state and kube context, pulumi through the
    in-process language host. Run its steps with `tools.env(env)`: the toolchain's binaries first."""
    space = workspace.Workspace(home(env))
    kind_file = cluster_config.load(cluster_config.GATEWAY_NODE_PORT, root / "local" / "kind-cluster.yaml")
    return plan.Context(
        root=root,
        cluster=kind_file,
        workspace=space,
        pulumi_env=workspace.pulumi_env(space, env),
        python=sys.executable,
        pulumi=(sys.executable, "-m", "components.local", "--root", str(root), "pulumi"),
        kube_context=CONTEXT,
        cluster_exists=("kubectl", "--context", CONTEXT, "get", "--raw", "/readyz"),
        cluster_stack_args=tuple(arg for folder in tools.crd_dirs() for arg in ("--crds", str(folder))),
    )


def pulumi_env(env: Mapping[str, str], tools: Toolchain) -> dict[str, str]:
    """What `scaleladder-local pulumi` runs with: the toolchain first on PATH, the engine offline, the
    simulated cluster's state and passphrase (unless set), and this interpreter for Python plugins."""
    space = workspace.Workspace(home(env))
    chosen = tools.env(env)
    return {**chosen, **workspace.pulumi_env(space, chosen), "PULUMI_PYTHON_CMD": sys.executable}


def unready(items: list[dict[str, Any]]) -> list[str]:
    """`Kind/name` of each workload in a `kubectl get -o json` list that is not where the kit's waits
    leave it: a Deployment Available, a StatefulSet with every replica ready, a Job Complete."""
    found = []
    for item in items:
        status = item.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        done = {
            "Deployment": conditions.get("Available") == "True",
            "StatefulSet": status.get("readyReplicas") == item["spec"].get("replicas"),
            "Job": conditions.get("Complete") == "True",
        }.get(item["kind"], True)
        if not done:
            found.append(f"{item['kind']}/{item['metadata']['name']}")
    return found


def kwokctl(*args: str) -> Argv:
    return ("kwokctl", "--name", NAME, *args)


def write_files(root: Path, env: Mapping[str, str], tools: Toolchain) -> tuple[Path, Path]:
    """kwokctl's config and the cluster's own objects (nodes, storage class), written under the sim's home."""
    folder = home(env)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "kwokctl.yaml"
    config.write_text(yaml.safe_dump_all(kwokctl_config(tools), sort_keys=False))
    kind_document = yaml.safe_load((root / "local" / "kind-cluster.yaml").read_text())
    objects = folder / "cluster-objects.yaml"
    objects.write_text(yaml.safe_dump_all([*nodes(kind_document), storage_class()], sort_keys=False))
    return config, objects


def cluster_up(ctx: plan.Context, config: Path, objects: Path, env: Mapping[str, str]) -> list[Step]:
    """Start the control plane unless it answers, register the nodes and the storage class, wait."""
    kwok_env = {"KWOK_WORKDIR": str(home(env) / "kwok")}
    cluster_folder = home(env) / "kwok" / "clusters" / NAME
    return [
        Step(
            f"remove the stopped simulated cluster {NAME} (its processes are gone)",
            kwokctl("-c", str(config), "delete", "cluster"),
            env=kwok_env,
            only_if=(("test", "-d", str(cluster_folder)),),
            skip_if=ctx.exists,
        ),
        Step(
            f"start the simulated cluster {NAME} on 127.0.0.1: etcd, API server, controllers, scheduler, kwok",
            kwokctl("-c", str(config), "create", "cluster", "--wait", START_TIMEOUT),
            env=kwok_env,
            skip_if=ctx.exists,
            timeout=600.0,
        ),
        Step(
            "register the nodes of local/kind-cluster.yaml and the default storage class",
            plan.kubectl(ctx, "apply", "--server-side", "--field-manager", "scaleladder-sim", "-f", str(objects)),
        ),
        Step(
            "wait for every node to be Ready (kwok answers for them)",
            plan.kubectl(ctx, "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=2m"),
        ),
    ]


def up(root: Path, env: Mapping[str, str], tools: Toolchain, phase: int | None) -> tuple[plan.Context, list[Step]]:
    """The simulated cluster, its cluster layer (CRDs and the shared Gateway), then phase `phase` if given."""
    ctx = context(root, env, tools)
    config, objects = write_files(root, env, tools)
    steps = [*cluster_up(ctx, config, objects, env), *plan.deploy_stack(ctx, plan.CLUSTER_STACK)]
    if phase is not None:
        steps += plan.phase_up(ctx, phase, list(image.image_refs(root).values()))
    return ctx, steps


def down(env: Mapping[str, str]) -> list[Step]:
    """Stop every process of the cluster (kwokctl kills them and removes their data), then forget the stacks."""
    folder = home(env)
    config = folder / "kwokctl.yaml"
    return [
        Step(
            f"stop the simulated cluster {NAME} and remove its data",
            kwokctl("-c", str(config), "delete", "cluster"),
            env={"KWOK_WORKDIR": str(folder / "kwok")},
            only_if=(("test", "-d", str(folder / "kwok" / "clusters" / NAME)),),
        ),
        Step(f"forget the simulated cluster's Pulumi state ({folder})", ("rm", "-rf", str(folder))),
    ]


def after_up(phase: int | None) -> str:
    """Where to look once it is up; what the simulation cannot show."""
    kubectl = f"kubectl --context {CONTEXT}"
    lines = [
        f"the simulated cluster {NAME} is up (context {CONTEXT}).",
        f"  nodes:    {kubectl} get nodes -L topology.kubernetes.io/zone",
    ]
    if phase is not None:
        ns = plan.namespace(plan.phase_stack(phase))
        lines.append(f"  inspect:  {kubectl} get deploy,sts,svc,hpa,pdb,pvc,pods -n {ns} -o wide")
    lines += [
        "  pods are simulated: no image runs, no probe is executed, nothing answers on a pod's address",
        "  (never kubectl logs/exec/port-forward here); kind (uv run scaleladder-local up) runs them for real.",
        "  teardown: uv run scaleladder-local sim down",
    ]
    return "\n".join(lines)
