"""The simulated cluster's objects and plan (it runs for real in tests/cluster)."""

from __future__ import annotations

from pathlib import Path

import yaml

from components.local import engine, image, plan, sim
from components.local.cli import ROOT
from components.local.toolchain import Toolchain

KIND = yaml.safe_load((ROOT / "local" / "kind-cluster.yaml").read_text())


def test_nodes_are_kinds_with_a_laptops_allocatable() -> None:
    nodes = sim.nodes(KIND)
    assert [n["metadata"]["name"] for n in nodes] == [
        "scaleladder-sim-control-plane",
        "scaleladder-sim-worker",
        "scaleladder-sim-worker2",
        "scaleladder-sim-worker3",
    ]
    control_plane, *workers = nodes
    assert control_plane["spec"]["taints"] == [sim.CONTROL_PLANE_TAINT]
    assert "topology.kubernetes.io/zone" not in control_plane["metadata"]["labels"]
    assert [w["metadata"]["labels"]["topology.kubernetes.io/zone"] for w in workers] == ["zone-a", "zone-b", "zone-c"]
    assert all(n["status"]["allocatable"] == {**sim.ALLOCATABLE, "cpu": "4", "memory": "8Gi"} for n in nodes)
    assert all(a["address"].startswith("127.") for n in nodes for a in n["status"]["addresses"])


def test_the_control_plane_listens_on_loopback_only(tmp_path: Path) -> None:
    (config,) = sim.kwokctl_config(Toolchain.load({"SCALELADDER_TOOLCHAIN": str(tmp_path)}))
    assert config["options"]["bindAddress"] == "127.0.0.1"
    assert config["options"]["kubeVersion"] == "v1.34.4"
    assert config["options"]["kubectlBinary"] == str(tmp_path / "kubernetes-v1.34.4" / "bin" / "kubectl")


def test_claims_bind_through_the_default_class() -> None:
    storage = sim.storage_class()
    assert storage["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert storage["provisioner"] == "kubernetes.io/host-path"


def test_sim_up_deploys_through_the_in_process_engine(tmp_path: Path) -> None:
    env = {"SCALELADDER_HOME": str(tmp_path / "home"), "SCALELADDER_TOOLCHAIN": str(tmp_path / "tools")}
    ctx, steps = sim.up(ROOT, env, Toolchain.load(env), 2)
    assert ctx.workspace.home == tmp_path / "home" / "sim"
    commands = [" ".join(step.argv) for step in steps]
    assert any("kwokctl --name scaleladder-sim -c" in c and "create cluster" in c for c in commands)
    ups = [step for step in steps if step.argv[5:7] == ("pulumi", "up")]
    assert len(ups) == 2
    assert all(step.argv[1:6] == ("-m", "components.local", "--root", str(ROOT), "pulumi") for step in ups)
    cluster_stack = next(step for step in steps if step.argv[5:7] == ("workspace", plan.CLUSTER_STACK))
    assert "--crds" in cluster_stack.argv
    assert step_index(steps, "pulumi up --stack kind") < step_index(steps, "pulumi up --stack phase2")
    # the phase stack gets both of the kit's images of this checkout; the cluster layer none
    phase_stack = next(step for step in steps if step.argv[5:7] == ("workspace", "phase2"))
    given = [phase_stack.argv[n + 1] for n, arg in enumerate(phase_stack.argv) if arg == "--image"]
    assert given == list(image.image_refs(ROOT).values())
    assert "--image" not in cluster_stack.argv


def step_index(steps: list[plan.Step], words: str) -> int:
    return next(number for number, step in enumerate(steps) if words in " ".join(step.argv))


def test_only_program_verbs_get_the_in_process_language_host() -> None:
    assert engine.runs_program(["up", "--stack", "phase1"])
    assert engine.runs_program(["--non-interactive", "preview"])
    assert not engine.runs_program(["stack", "select", "phase1"])
    assert not engine.runs_program(["plugin", "ls"])


def test_unready_names_each_workload_the_waits_would_still_wait_for() -> None:
    def item(kind: str, name: str, status: dict[str, object], spec: dict[str, object] | None = None) -> dict:
        return {"kind": kind, "metadata": {"name": name}, "spec": spec or {}, "status": status}

    available = {"conditions": [{"type": "Available", "status": "True"}]}
    complete = {"conditions": [{"type": "Complete", "status": "True"}]}
    items = [
        item("Deployment", "web", available),
        item("Deployment", "pgbouncer", {"conditions": [{"type": "Available", "status": "False"}]}),
        item("StatefulSet", "postgres", {"readyReplicas": 3}, {"replicas": 3}),
        item("StatefulSet", "redis", {"readyReplicas": 1}, {"replicas": 2}),
        item("Job", "migrate", complete),
        item("Job", "setup", {}),
    ]
    assert sim.unready(items) == ["Deployment/pgbouncer", "StatefulSet/redis", "Job/setup"]
