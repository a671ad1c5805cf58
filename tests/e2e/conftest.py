"""e2e on a local kind cluster: opt-in (`pytest -m e2e`), and only where the tools are installed.

The default test run collects these tests and skips them with one reason that says how to run
them and what this machine lacks, so CI output shows why they did not run. With `-m e2e` they
bring the cluster and each phase up through the same planner and runner as `scaleladder-local`,
check the phase's claims with kubectl and HTTP on loopback, and destroy what they deployed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from components.local import cli, image, plan, prerequisites
from components.local.runner import Runner, probe
from testsupport.process import ServerProcess, free_port, port_open

OPT_IN = "e2e: opt-in, run `pytest -m e2e` with docker, kind, kubectl and pulumi installed"


def selected_e2e(config: pytest.Config) -> bool:
    """True when the -m expression asks for e2e tests (`-m e2e`, `-m "e2e and not slow"`)."""
    expression = str(config.getoption("-m") or "")
    return "e2e" in expression.replace("not e2e", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    if not e2e:
        return
    missing = prerequisites.missing(prerequisites.check(os.environ))
    if not selected_e2e(config):
        reason = f"{OPT_IN} (missing here: {', '.join(missing) or 'nothing'})"
    elif missing:
        reason = f"e2e: missing here: {', '.join(missing)} (`uv run scaleladder-local check` shows install hints)"
    else:
        return
    for item in e2e:
        item.add_marker(pytest.mark.skip(reason=reason))


class Kube:
    """kubectl, HTTP and waiting, against the kind cluster of the local flow."""

    def __init__(self, ctx: plan.Context, logs: Path) -> None:
        self.ctx = ctx
        self.logs = logs

    def run(self, *args: str, check: bool = True, timeout: float = 120.0) -> str:
        argv = plan.kubectl(self.ctx, *args)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))

    def exec(self, namespace: str, pod: str, container: str, *command: str) -> str:
        return self.run("exec", "-n", namespace, pod, "-c", container, "--", *command)

    def get(self, host: str, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        """GET through the shared Gateway on the host port, with the route's Host header."""
        return self.http(f"http://127.0.0.1:{self.ctx.cluster.host_port}{path}", {"Host": host}, timeout)

    @staticmethod
    def http(
        url: str, headers: dict[str, str] | None = None, timeout: float = 5.0
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of one GET; HTTP errors are answers too, not exceptions."""
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    @staticmethod
    def wait_until(what: str, condition: Callable[[], bool], timeout: float, interval: float = 5.0) -> None:
        """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(interval)
        raise AssertionError(f"{what}: not true after {timeout:.0f}s")

    def ready_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Running, Ready pods of workload `name` (label app.kubernetes.io/name)."""
        pods = self.json("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/name={name}")["items"]
        return [pod for pod in pods if is_ready(pod)]

    @contextmanager
    def port_forward(self, namespace: str, target: str, remote_port: int) -> Iterator[int]:
        """`kubectl port-forward` as a foreground child; yields the local loopback port."""
        local = free_port()
        argv = plan.kubectl(
            self.ctx, "port-forward", "-n", namespace, target, f"{local}:{remote_port}", "--address", "127.0.0.1"
        )
        log = self.logs / f"port-forward-{target.replace('/', '-')}-{local}.log"
        forward = ServerProcess(argv, ready=lambda: port_open(local), log=log, timeout=60.0)
        try:
            yield local
        finally:
            forward.stop()


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """The kind cluster with its cluster layer; torn down at the end only if this session created it."""
    ctx = cli.context(cli.ROOT, os.environ)
    logs = tmp_path_factory.mktemp("e2e-logs")
    existed = probe(plan.cluster_exists(ctx), os.environ)
    with open(logs / "cluster.log", "w") as out:
        Runner(os.environ, out).run(plan.cluster_up(ctx))
    yield Kube(ctx, logs)
    if not existed:
        with open(logs / "down.log", "w") as out:
            Runner(os.environ, out).run(plan.down(ctx, [], keep_cluster=False))


@pytest.fixture(scope="module")
def deployed(kit: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """Bring up the module's phase (`PHASE = n` in the test module), yield its namespace, destroy it.

    A phase whose stack file has not landed yet is skipped, naming the file.
    """
    phase = int(request.module.PHASE)
    stack = plan.phase_stack(phase)
    if stack not in cli.phase_stacks(cli.ROOT):
        pytest.skip(f"e2e: no stacks/Pulumi.{stack}.yaml yet")
    refs = list(image.image_refs(cli.ROOT).values())
    with open(kit.logs / f"{stack}.log", "w") as out:
        runner = Runner(os.environ, out)
        runner.run([*plan.image_loaded(kit.ctx, refs), *plan.phase_up(kit.ctx, phase, refs)])
        yield plan.namespace(stack)
        runner.run(plan.destroy_stack(kit.ctx, stack))
