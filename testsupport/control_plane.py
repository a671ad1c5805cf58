"""The simulated cluster's real control plane for tests: etcd, kube-apiserver, controllers, kwok's nodes.

Built by `scaleladder-local toolchain`; without a complete toolchain a test skips saying how to
build it (in CI, CI=true, that is a failure). A ControlPlane lives in a home of its own
(SCALELADDER_HOME, KUBECONFIG), so it never touches a simulated cluster of yours.

    plane = ControlPlane.start(tmp_path)
    plane.kubectl("get", "pods", "-n", "ns")
    plane.token("ns", "service-account")    # a token for a ServiceAccount, as a pod would mount it
    plane.stop()
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.local import plan, sim, toolchain
from components.local.cli import ROOT
from components.local.runner import Runner


def complete_toolchain(env: Mapping[str, str]) -> toolchain.Toolchain:
    """The toolchain, checked; a skip (a failure in CI) naming what is missing."""
    tools = toolchain.Toolchain.load(env)
    out = io.StringIO()
    if toolchain.check(tools, env, out) != 0:
        message = f"this test needs the toolchain: `uv run scaleladder-local toolchain`\n{out.getvalue()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return tools


class ControlPlane:
    """A running simulated cluster without any stack: nodes and the default storage class only."""

    def __init__(self, home: Path) -> None:
        self.home = home
        base = {**os.environ, "SCALELADDER_HOME": str(home), "KUBECONFIG": str(home / "kubeconfig")}
        tools = complete_toolchain(base)
        self.env = tools.env(base)
        self.ctx = sim.context(ROOT, base, tools)
        self._files = sim.write_files(ROOT, base, tools)

    @classmethod
    def start(cls, home: Path) -> ControlPlane:
        plane = cls(home)
        try:
            Runner(plane.env, io.StringIO()).run(sim.cluster_up(plane.ctx, *plane._files, plane.env))
        except Exception:
            plane.stop()
            raise
        return plane

    def stop(self) -> None:
        Runner(self.env, io.StringIO()).run(sim.down(self.env))

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        """`kubectl ARGS` on this cluster; its output, or an AssertionError with its error."""
        done = subprocess.run(
            plan.kubectl(self.ctx, *args), env=self.env, input=stdin, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    def get(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, objects: list[dict[str, Any]]) -> None:
        """Server-side apply of these objects, as the kit's field manager would own them."""
        self.kubectl(
            "apply", "--server-side", "--field-manager", "scaleladder-test", "-f", "-",
            stdin=yaml.safe_dump_all(objects, sort_keys=False),
        )  # fmt: skip

    def token_kubeconfig(self, path: Path, namespace: str, account: str, server_port: int | None = None) -> Path:
        """A kubeconfig (context `pod`) that authenticates as the ServiceAccount with a fresh token,
        as a pod that mounts its token would; `server_port`: reach the API server through that
        loopback port instead (a TcpProxy in front of it)."""
        admin = yaml.safe_load(Path(self.env["KUBECONFIG"]).read_text())
        context = next(c for c in admin["contexts"] if c["name"] == self.ctx.kube_context)["context"]
        cluster = dict(next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"])
        if server_port is not None:
            cluster["server"] = f"https://127.0.0.1:{server_port}"
        if "certificate-authority" in cluster:  # inline: the pod's uid cannot read the cluster's files
            ca = Path(cluster.pop("certificate-authority")).read_bytes()
            cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
        token = self.kubectl("create", "token", account, "-n", namespace, "--duration", "4h").strip()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "sim", "cluster": cluster}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "pod", "context": {"cluster": "sim", "user": account, "namespace": namespace}}],
            "current-context": "pod",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def api_server_port(self) -> int:
        """The loopback port the API server listens on."""
        admin = yaml.safe_load(Path(self.env["KUBECONFIG"]).read_text())
        context = next(c for c in admin["contexts"] if c["name"] == self.ctx.kube_context)["context"]
        server = next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"]["server"]
        return int(server.rsplit(":", 1)[1])
