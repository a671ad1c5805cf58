"""Build the offline toolchain from Go modules: Pulumi CLI and provider, a Kubernetes control plane, kwok, CRDs.

`scaleladder-local toolchain` builds every family pinned in `local/toolchain.yaml` with `go build`
through the Go module proxy, into a cache outside the repository (`SCALELADDER_TOOLCHAIN`, default
~/.cache/scaleladder/toolchain), one folder per family and version: a pin change rebuilds that
family only, and a run with a complete cache only checks versions. Each family is a throwaway Go
module of its own that requires the upstream module at the pinned version and repeats the
`replace` lines that make `go install` refuse it. Go's own caches (GOCACHE, GOMODCACHE) stay
where `go env` puts them, so rebuilding a family compiles nothing that was compiled before.

`--check` asks every binary for its version (and looks for every generated CRD); it exits 0
only when all match the pins.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from components.local.plugin_info import plugin_version
from components.local.runner import elapsed

ROOT = Path(__file__).resolve().parent.parent.parent
PINS_FILE = ROOT / "local" / "toolchain.yaml"
PLUGINS = ROOT / "local" / "pulumi-plugins"  # the kit's own plugin script (see its comment)
COMMAND_TIMEOUT = 3600.0
VERSION_TIMEOUT = 60.0
STAMP = "complete.json"


class ToolchainError(RuntimeError):
    """A pin is missing or malformed, a build step failed, or a binary reports another version."""


Pins = Mapping[str, Any]


@dataclass(frozen=True)
class Binary:
    """A built program, the arguments that make it print its version, and what that output must contain."""

    name: str
    version_args: tuple[str, ...]
    expect: str


@dataclass
class Shell:
    """Runs a family's commands with Go's environment, printing each with its elapsed time."""

    out: TextIO
    env: dict[str, str]

    def run(self, argv: Sequence[str], cwd: Path, extra_env: Mapping[str, str] | None = None) -> str:
        """Run one command; returns its stdout, raises ToolchainError with its last lines when it fails."""
        started = time.monotonic()
        self.say(f"    $ {' '.join(argv)}")
        try:
            done = subprocess.run(
                list(argv),
                cwd=cwd,
                env={**self.env, **(extra_env or {})},
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ToolchainError(f"`{' '.join(argv)}` in {cwd}: {error}") from None
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
            raise ToolchainError(f"`{' '.join(argv)}` in {cwd} exited with {done.returncode}:\n{tail}")
        self.say(f"      {elapsed(time.monotonic() - started)}")
        return done.stdout

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


@dataclass(frozen=True)
class Family:
    """One Go wrapper module: its pins, what it builds and how, what proves the build complete."""

    name: str
    pins: Pins
    build: Callable[[Family, Path, Shell], None]
    binaries: tuple[Binary, ...] = ()
    files: tuple[str, ...] = ()  # files (relative to the family's folder) the build must have written
    on_path: bool = True  # False: only the engine loads its binaries, from the plugin cache

    @property
    def version(self) -> str:
        return str(self.pins["version"])

    @property
    def folder_name(self) -> str:
        """The cache folder: family and every pin, so that any pin change is a new folder."""
        extra = "".join(f"-{key}-{value}" for key, value in sorted(self.pins.items()) if key != "version")
        return f"{self.name}-{self.version}{extra}"


def go_env(base: Mapping[str, str]) -> dict[str, str]:
    """Static binaries, requirements written as wrappers resolve them, and this machine's Go only."""
    return {**base, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}


def write_go_mod(
    folder: Path, module: str, go: str, requires: Mapping[str, str], replaces: Mapping[str, str] | None = None
) -> None:
    """A wrapper module's go.mod: `requires` at exact versions, `replaces` as `old => new version` lines."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"module scaleladder.local/toolchain/{module}", "", f"go {go}", "", "require ("]
    lines += [f"\t{path} {version}" for path, version in requires.items()]
    lines.append(")")
    if replaces:
        lines += ["", "replace ("]
        lines += [f"\t{old} => {new}" for old, new in replaces.items()]
        lines.append(")")
    (folder / "go.mod").write_text("\n".join(lines) + "\n")
    (folder / "go.sum").unlink(missing_ok=True)


def go_get(shell: Shell, src: Path, packages: Sequence[str], version: str) -> None:
    """Resolve the wrapper's build list; always @version: a bare `go get` would upgrade to the newest."""
    shell.run(["go", "get", *(f"{package}@{version}" for package in packages)], src)


def go_build(shell: Shell, src: Path, out: Path, packages: Sequence[str], stamps: Sequence[str] = ()) -> None:
    """`go build` main packages into `out` (a folder, or a file for one package): static, stripped,
    versions stamped with -X where upstream's release build stamps them."""
    flags = " ".join(["-s", "-w", *(f"-X {assignment}" for assignment in stamps)])
    target = f"{out}/" if out.is_dir() else str(out)
    shell.run(["go", "build", "-trimpath", "-ldflags", flags, "-o", target, *packages], src)


def download(shell: Shell, module: str, version: str, cwd: Path) -> dict[str, Any]:
    """`go mod download -json module@version`: its folder (Dir) and go.mod (GoMod) in the module cache."""
    info: dict[str, Any] = json.loads(shell.run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd))
    if info.get("Error"):
        raise ToolchainError(f"{module}@{version}: {info['Error']}")
    return info


def replace_block(go_mod: str) -> dict[str, str]:
    """The non-local `replace` lines of a go.mod (block or single-line form), as old => new version."""
    lines = re.findall(r"^replace\s+(\S+.*)$", go_mod, re.MULTILINE)
    for block in re.findall(r"^replace \($(.*?)^\)", go_mod, re.MULTILINE | re.DOTALL):
        lines += block.splitlines()
    found = {}
    for line in lines:
        line = line.split("//")[0].strip()
        if "=>" not in line:
            continue
        old, new = (side.split() for side in line.split("=>"))
        if new[0].startswith("."):
            continue  # local folders are absent from module zips: the wrapper requires published modules
        found[old[0]] = " ".join(new)
    return found


# --- the engine ----------------------------------------------------------------------------------

PULUMI = "github.com/pulumi/pulumi"


def build_pulumi(family: Family, home: Path, shell: Shell) -> None:
    """The CLI's module pkg/v3 replaces sdk/v3 with ../sdk: the wrapper requires sdk/v3 at the same
    version and repeats pkg's and sdk's other replace lines (a clipboard fork, an exact x/text)."""
    src, version = home / "src", family.version
    write_go_mod(src, "pulumi", "1.25.11", {f"{PULUMI}/pkg/v3": version, f"{PULUMI}/sdk/v3": version})
    replaces: dict[str, str] = {}
    for module in ("pkg/v3", "sdk/v3"):
        replaces |= replace_block(Path(download(shell, f"{PULUMI}/{module}", version, src)["GoMod"]).read_text())
    write_go_mod(src, "pulumi", "1.25.11", {f"{PULUMI}/pkg/v3": version, f"{PULUMI}/sdk/v3": version}, replaces)
    go_get(shell, src, [f"{PULUMI}/pkg/v3/cmd/pulumi", f"{PULUMI}/sdk/v3"], version)
    stamp = [f"{PULUMI}/sdk/v3/go/common/version.Version={version}"]
    go_build(shell, src, home / "bin", [f"{PULUMI}/pkg/v3/cmd/pulumi"], stamp)


PROVIDER = "github.com/pulumi/pulumi-kubernetes/provider/v4"
PULUMI_HOME = "pulumi-home"  # the provider family's plugin cache, the engine's PULUMI_HOME


def build_pulumi_kubernetes(family: Family, home: Path, shell: Shell) -> None:
    """The provider embeds a schema its generator writes from the module's own schema.json (the
    output is git-ignored, so absent from the module zip): copy the module out of the read-only
    cache, drop its local replace of the SDK (only templates import it), generate, build in place."""
    scratch = home / "scratch"
    write_go_mod(scratch, "scratch", "1.24.0", {})
    cached = Path(download(shell, PROVIDER, str(family.pins["module"]), scratch)["Dir"])
    src = home / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(cached, src)
    for path in [src, *src.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    shell.run(["go", "mod", "edit", "-dropreplace=github.com/pulumi/pulumi-kubernetes/sdk/v4"], src)
    main = "./cmd/pulumi-resource-kubernetes"
    shell.run(["go", "generate", main], src, {"VERSION": family.version})
    go_build(shell, src, home / "bin", [main], [f"{PROVIDER}/pkg/version.Version={family.version}"])
    install_plugin(family, home, shell)


def install_plugin(family: Family, home: Path, shell: Shell) -> None:
    """Install the provider into the toolchain's own plugin cache (PULUMI_HOME), under its version:
    the engine then loads it for exactly the version the SDK asks for, and never downloads one."""
    binary = home / "bin" / "pulumi-resource-kubernetes"
    argv = ["pulumi", "plugin", "install", "resource", "kubernetes", f"v{family.version}", "--file", str(binary)]
    shell.run([*argv, "--reinstall"], home, {"PULUMI_HOME": str(home / PULUMI_HOME)})


# --- the control plane ---------------------------------------------------------------------------

KUBERNETES_MAINS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def build_kubernetes(family: Family, home: Path, shell: Shell) -> None:
    """k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with folders absent
    from its module zip: the wrapper replaces each with the published k8s.io/<name> v0.<minor>.<patch>."""
    src, version = home / "src", family.version
    write_go_mod(src, "kubernetes", "1.24.0", {"k8s.io/kubernetes": version})
    upstream = Path(download(shell, "k8s.io/kubernetes", version, src)["GoMod"]).read_text()
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", upstream, re.MULTILINE)
    if not staging:
        raise ToolchainError(f"k8s.io/kubernetes@{version}: its go.mod replaces no ./staging modules")
    published = "v0." + version.removeprefix("v1.")
    write_go_mod(
        src, "kubernetes", "1.24.0", {"k8s.io/kubernetes": version}, {name: f"{name} {published}" for name in staging}
    )
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_MAINS]
    go_get(shell, src, packages, version)
    # what hack/lib/version.sh stamps: without it /version says v0.0.0 and Pulumi refuses the cluster
    stamps = [
        f"{package}.{key}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", "1"),
            ("gitMinor", version.split(".")[1]),
            ("gitTreeState", "clean"),
        )
    ]
    go_build(shell, src, home / "bin", packages, stamps)


def build_etcd(family: Family, home: Path, shell: Shell) -> None:
    """The etcd server is the module go.etcd.io/etcd/server/v3 itself; its go.mod replaces its sibling
    modules with folders, so the wrapper only requires it (its requirements pin the siblings)."""
    src = home / "src"
    write_go_mod(src, "etcd", "1.26.0", {"go.etcd.io/etcd/server/v3": family.version})
    go_get(shell, src, ["go.etcd.io/etcd/server/v3"], family.version)
    go_build(shell, src, home / "bin" / "etcd", ["go.etcd.io/etcd/server/v3"])


def build_kwok(family: Family, home: Path, shell: Shell) -> None:
    """kwok has no replace lines; a wrapper all the same, so its dependencies stay its own."""
    src = home / "src"
    write_go_mod(src, "kwok", "1.26.0", {"sigs.k8s.io/kwok": family.version})
    packages = ["sigs.k8s.io/kwok/cmd/kwok", "sigs.k8s.io/kwok/cmd/kwokctl"]
    go_get(shell, src, packages, family.version)
    go_build(shell, src, home / "bin", packages)


# --- CRDs, by the upstream generators --------------------------------------------------------------

GATEWAY_API_CHANNELS = ("standard", "experimental")
GATEWAY_API_STANDARD = ("gatewayclasses", "gateways", "grpcroutes", "httproutes", "referencegrants")


def build_gateway_api_crds(family: Family, home: Path, shell: Shell) -> None:
    """Gateway API's own generator (pkg/generator up to v1.4) writes config/crd/<channel>/ below its
    working directory, with the bundle version and channel annotations; its files come out 0600."""
    src, version = home / "src", family.version
    write_go_mod(src, "gateway-api", "1.24.0", {"sigs.k8s.io/gateway-api": version})
    go_get(shell, src, ["sigs.k8s.io/gateway-api/pkg/generator"], version)
    generator = home / "bin" / "gateway-api-generator"
    generator.parent.mkdir(parents=True, exist_ok=True)
    go_build(shell, src, generator, ["sigs.k8s.io/gateway-api/pkg/generator"])
    out = src / "config" / "crd"
    for channel in GATEWAY_API_CHANNELS:
        (out / channel).mkdir(parents=True, exist_ok=True)
    shell.run([str(generator)], src)
    publish_crds(out / "experimental", home / "crds")


def build_envoy_gateway_crds(family: Family, home: Path, shell: Shell) -> None:
    """controller-gen over Envoy Gateway's API package, as its tools/make/kube.mk runs it."""
    src = home / "src"
    controller_gen = build_controller_gen(home, shell, str(family.pins["controller-tools"]))
    write_go_mod(src, "envoy-gateway", "1.25.0", {"github.com/envoyproxy/gateway": family.version})
    api = "github.com/envoyproxy/gateway/api/v1alpha1"
    go_get(shell, src, [api], family.version)
    out = src / "generated"
    shell.run(
        [str(controller_gen), "crd:allowDangerousTypes=true", f"paths={api}", f"output:crd:artifacts:config={out}"], src
    )
    publish_crds(out, home / "crds")


def build_keda_crds(family: Family, home: Path, shell: Shell) -> None:
    """controller-gen over KEDA's API packages, as its Makefile runs it. KEDA's go.mod pins k8s.io and
    Prometheus modules down with replace lines: the wrapper repeats them, else its API does not build."""
    src, version = home / "src", family.version
    controller_gen = build_controller_gen(home, shell, str(family.pins["controller-tools"]))
    module = "github.com/kedacore/keda/v2"
    write_go_mod(src, "keda", "1.24.0", {module: version})
    replaces = replace_block(Path(download(shell, module, version, src)["GoMod"]).read_text())
    write_go_mod(src, "keda", "1.24.0", {module: version}, replaces)
    go_get(shell, src, [f"{module}/apis/keda/v1alpha1", f"{module}/apis/eventing/v1alpha1"], version)
    out = src / "generated"
    shell.run(
        [
            str(controller_gen),
            "crd:crdVersions=v1,generateEmbeddedObjectMeta=true",
            f"paths={module}/apis/...",
            f"output:crd:artifacts:config={out}",
        ],
        src,
    )
    (out / "keda.sh_withtriggers.yaml").unlink(missing_ok=True)  # an internal type; KEDA's Makefile drops it too
    publish_crds(out, home / "crds")


def build_controller_gen(home: Path, shell: Shell, version: str) -> Path:
    """controller-gen at the version the generated project pins, in a wrapper of its own."""
    src = home / f"controller-gen-{version}"
    write_go_mod(src, "controller-gen", "1.24.0", {"sigs.k8s.io/controller-tools": version})
    go_get(shell, src, ["sigs.k8s.io/controller-tools/cmd/controller-gen"], version)
    binary = home / "bin" / "controller-gen"
    binary.parent.mkdir(parents=True, exist_ok=True)
    go_build(shell, src, binary, ["sigs.k8s.io/controller-tools/cmd/controller-gen"])
    return binary


def publish_crds(generated: Path, crds: Path) -> None:
    """Copy the generator's CRD files into the family's crds/ folder, readable by everyone."""
    if crds.exists():
        shutil.rmtree(crds)
    crds.mkdir(parents=True)
    for path in sorted(generated.glob("*.yaml")):
        target = crds / path.name
        shutil.copyfile(path, target)
        target.chmod(0o644)


# --- pins, folders, checks ---------------------------------------------------------------------------


def load_pins(path: Path = PINS_FILE) -> list[Family]:
    """The families of the pins file, in build order; ToolchainError names every missing or malformed pin."""
    document = yaml.safe_load(path.read_text()) or {}
    problems: list[str] = []

    def pin(key: str, *fields: str) -> dict[str, str]:
        value = document.get(key)
        if not fields:
            value = {"version": value}
        if not isinstance(value, dict) or any(not isinstance(value.get(name), str) for name in ("version", *fields)):
            wanted = ", ".join(("version", *fields)) if fields else "a version string"
            problems.append(f"{key}: needs {wanted}, got {document.get(key)!r}")
            return {"version": "?", **dict.fromkeys(fields, "?")}
        return {name: value[name] for name in ("version", *fields)}

    pulumi, provider = pin("pulumi"), pin("pulumi-kubernetes", "module")
    kubernetes, etcd, kwok = pin("kubernetes"), pin("etcd"), pin("kwok")
    gateway_api = pin("gateway-api")
    envoy_gateway, keda = pin("envoy-gateway", "controller-tools"), pin("keda", "controller-tools")
    unknown = sorted(set(document) - set(KNOWN_PINS))
    if unknown:
        problems.append(f"unknown pins {', '.join(unknown)}; known: {', '.join(KNOWN_PINS)}")
    if problems:
        raise ToolchainError(f"{path}: " + "; ".join(problems))
    k8s = kubernetes["version"]
    return [
        Family("pulumi", pulumi, build_pulumi, (Binary("pulumi", ("version",), pulumi["version"]),)),
        Family(
            "pulumi-kubernetes",
            provider,
            build_pulumi_kubernetes,
            (Binary("pulumi-resource-kubernetes", (), provider["version"]),),
            files=(f"{PULUMI_HOME}/plugins/resource-kubernetes-v{provider['version']}/pulumi-resource-kubernetes",),
            on_path=False,
        ),
        Family(
            "kubernetes",
            kubernetes,
            build_kubernetes,
            (
                *(Binary(name, ("--version",), f"Kubernetes {k8s}") for name in KUBERNETES_MAINS[:3]),
                Binary("kubectl", ("version", "--client"), f"Client Version: {k8s}"),
            ),
        ),
        Family("etcd", etcd, build_etcd, (Binary("etcd", ("--version",), f"etcd Version: {etcd['version'][1:]}"),)),
        Family(
            "kwok",
            kwok,
            build_kwok,
            tuple(Binary(name, ("--version",), f"version {kwok['version']}") for name in ("kwok", "kwokctl")),
        ),
        Family(
            "gateway-api",
            gateway_api,
            build_gateway_api_crds,
            files=tuple(f"crds/gateway.networking.k8s.io_{plural}.yaml" for plural in GATEWAY_API_STANDARD),
        ),
        Family(
            "envoy-gateway",
            envoy_gateway,
            build_envoy_gateway_crds,
            files=(
                "crds/gateway.envoyproxy.io_backendtrafficpolicies.yaml",
                "crds/gateway.envoyproxy.io_envoyproxies.yaml",
            ),
        ),
        Family("keda", keda, build_keda_crds, files=("crds/keda.sh_scaledobjects.yaml",)),
    ]


KNOWN_PINS = (
    "pulumi",
    "pulumi-kubernetes",
    "kubernetes",
    "etcd",
    "kwok",
    "gateway-api",
    "envoy-gateway",
    "keda",
)


def cache_root(env: Mapping[str, str]) -> Path:
    """Where the toolchain lives: SCALELADDER_TOOLCHAIN, else ~/.cache/scaleladder/toolchain."""
    chosen = env.get("SCALELADDER_TOOLCHAIN")
    return Path(chosen) if chosen else Path(env.get("HOME") or Path.home()) / ".cache" / "scaleladder" / "toolchain"


@dataclass(frozen=True)
class Toolchain:
    """The families of the pins, resolved to their folders in the cache."""

    root: Path
    families: tuple[Family, ...]

    @classmethod
    def load(cls, env: Mapping[str, str], pins: Path = PINS_FILE) -> Toolchain:
        return cls(cache_root(env), tuple(load_pins(pins)))

    def home(self, family: Family) -> Path:
        return self.root / family.folder_name

    def bin_dirs(self) -> list[Path]:
        """The bin folders of the families on PATH, then the kit's plugin scripts: what PATH needs, in front."""
        return [self.home(f) / "bin" for f in self.families if f.binaries and f.on_path] + [PLUGINS]

    def crd_dirs(self) -> list[Path]:
        """The folders of generated CRDs, one per family that generates them."""
        return [self.home(f) / "crds" for f in self.families if any(name.startswith("crds/") for name in f.files)]

    def pulumi_home(self) -> Path:
        """The engine's PULUMI_HOME: the plugin cache the provider is installed into."""
        return self.home(self.family("pulumi-kubernetes")) / PULUMI_HOME

    def family(self, name: str) -> Family:
        """The family called `name` (KeyError if none is)."""
        for family in self.families:
            if family.name == name:
                return family
        raise KeyError(name)

    def binary(self, name: str) -> Path:
        for family in self.families:
            if any(binary.name == name for binary in family.binaries):
                return self.home(family) / "bin" / name
        raise KeyError(name)

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with the toolchain first on PATH and the engine kept offline."""
        path = os.pathsep.join([*(str(folder) for folder in self.bin_dirs()), base.get("PATH", "")])
        return {
            **base,
            "PATH": path,
            "PULUMI_HOME": str(self.pulumi_home()),
            # every plugin is local: a missing one is an error, never a download
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
        }


def problems(toolchain: Toolchain, family: Family, env: Mapping[str, str]) -> list[str]:
    """What is missing or wrong in a family's folder: each binary's version, each generated file."""
    found = []
    home = toolchain.home(family)
    for binary in family.binaries:
        path = home / "bin" / binary.name
        if not path.exists():
            found.append(f"{binary.name}: missing ({path})")
            continue
        reported = reported_version(path, binary, env)
        if binary.expect not in reported:
            found.append(f"{binary.name}: expected {binary.expect!r}, it reports {reported!r}")
    for name in family.files:
        if not (home / name).is_file():
            found.append(f"{name}: not written ({home})")
    return found


def reported_version(path: Path, binary: Binary, env: Mapping[str, str]) -> str:
    """What the binary says its version is. A provider has no --version: ask it as the engine does."""
    if not binary.version_args:
        return plugin_version(path)
    try:
        done = subprocess.run(
            [str(path), *binary.version_args],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"could not run: {error}"
    return (done.stdout + done.stderr).strip().replace("\n", " ")[:300]


def build(toolchain: Toolchain, env: Mapping[str, str], out: TextIO, only: Sequence[str] = ()) -> int:
    """Build every family that is not complete (or those named in `only`); 0 when all are complete."""
    names = [family.name for family in toolchain.families]
    unknown = [name for name in only if name not in names]
    if unknown:
        raise ToolchainError(f"unknown families {', '.join(unknown)}; families: {', '.join(names)}")
    shell = Shell(out, go_env(toolchain.env(env)))  # later families may run earlier ones (pulumi)
    started = time.monotonic()
    for family in toolchain.families:
        if only and family.name not in only:
            continue
        home = toolchain.home(family)
        stamp = home / STAMP
        if stamp.exists() and not problems(toolchain, family, env):
            shell.say(f"[{family.name} {family.version}] complete in {home}")
            continue
        shell.say(f"[{family.name} {family.version}] building in {home}")
        family_started = time.monotonic()
        stamp.unlink(missing_ok=True)
        (home / "bin").mkdir(parents=True, exist_ok=True)
        family.build(family, home, shell)
        found = problems(toolchain, family, env)
        if found:
            raise ToolchainError(f"{family.name}: built, but " + "; ".join(found))
        stamp.write_text(json.dumps({"family": family.name, "pins": dict(family.pins)}, indent=2) + "\n")
        shell.say(f"[{family.name} {family.version}] built in {elapsed(time.monotonic() - family_started)}")
    shell.say(f"toolchain complete in {toolchain.root} ({elapsed(time.monotonic() - started)})")
    return 0


def check(toolchain: Toolchain, env: Mapping[str, str], out: TextIO) -> int:
    """Print each family's state; 0 only when every binary reports its pinned version."""
    missing = 0
    for family in toolchain.families:
        found = problems(toolchain, family, env)
        state = "ok" if not found else "; ".join(found)
        out.write(f"[{'ok  ' if not found else 'FAIL'}] {family.name} {family.version}: {state}\n")
        missing += bool(found)
    if missing:
        out.write(f"{missing} families incomplete: run `uv run scaleladder-local toolchain`\n")
    return 1 if missing else 0
