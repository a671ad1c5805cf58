"""The toolchain's pins, folders and checks (the builds themselves run in `.ci/run` and the cluster tier)."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from components.local import toolchain
from components.local.toolchain import Toolchain, ToolchainError

PINS = toolchain.PINS_FILE.read_text()


def test_every_family_is_pinned_once_in_build_order() -> None:
    families = toolchain.load_pins()
    assert [f.name for f in families] == list(toolchain.KNOWN_PINS)
    assert families[0].name == "pulumi"  # the provider family installs its plugin with this CLI


def test_the_provider_is_the_sdk_release_the_lock_file_pins() -> None:
    provider = next(f for f in toolchain.load_pins() if f.name == "pulumi-kubernetes")
    lock = (toolchain.ROOT / "uv.lock").read_text()
    assert f'name = "pulumi-kubernetes"\nversion = "{provider.version}"' in lock


def test_a_pin_change_is_a_new_folder() -> None:
    families = {f.name: f for f in toolchain.load_pins()}
    assert families["kubernetes"].folder_name == "kubernetes-v1.34.4"
    assert families["keda"].folder_name == "keda-v2.17.2-controller-tools-v0.16.5"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("etcd: v3.6.17", "etcd: 3"), "etcd: needs a version string, got 3"),
        (("  module: v4.0.0-20260115033456-f47bc2d6f199\n", ""), "pulumi-kubernetes: needs version, module, got"),
        (("kwok: v0.8.0", "kwok: v0.8.0\nkind: v0.30.0"), "unknown pins kind; known: pulumi, pulumi-kubernetes"),
    ],
)
def test_pin_mistakes_are_named(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    path = tmp_path / "toolchain.yaml"
    path.write_text(PINS.replace(*edit))
    with pytest.raises(ToolchainError, match=message) as raised:
        toolchain.load_pins(path)
    assert str(path) in str(raised.value)


def test_replace_block_keeps_published_modules_and_drops_local_folders() -> None:
    go_mod = """module example.com/x

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e

replace (
\t// pinned down
\tk8s.io/api => k8s.io/api v0.31.7 // with a comment
\tgithub.com/pulumi/pulumi/sdk/v3 => ../sdk
)
"""
    assert toolchain.replace_block(go_mod) == {
        "github.com/atotto/clipboard": "github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e",
        "k8s.io/api": "k8s.io/api v0.31.7",
    }


def test_env_puts_the_toolchain_first_and_keeps_the_engine_offline(tmp_path: Path) -> None:
    tools = Toolchain.load({"SCALELADDER_TOOLCHAIN": str(tmp_path)})
    env = tools.env({"PATH": "/usr/bin"})
    path = env["PATH"].split(os.pathsep)
    assert path[-1] == "/usr/bin"
    assert str(tmp_path / "kubernetes-v1.34.4" / "bin") in path  # its kubectl before any other
    assert not any("pulumi-kubernetes" in folder for folder in path)  # the engine loads it from PULUMI_HOME
    assert env["PULUMI_HOME"].startswith(str(tmp_path / "pulumi-kubernetes-4.25.0"))
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"


def fake_binary(path: Path, output: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{output}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_check_names_every_missing_or_wrong_binary(tmp_path: Path) -> None:
    env = {"SCALELADDER_TOOLCHAIN": str(tmp_path), "PATH": os.environ["PATH"]}
    tools = Toolchain.load(env)
    etcd = tools.family("etcd")
    fake_binary(tools.home(etcd) / "bin" / "etcd", "etcd Version: 3.6.16")
    out = io.StringIO()
    assert toolchain.check(tools, env, out) == 1
    report = out.getvalue()
    assert "[FAIL] etcd v3.6.17: etcd: expected 'etcd Version: 3.6.17', it reports 'etcd Version: 3.6.16'" in report
    assert f"kube-apiserver: missing ({tools.home(tools.family('kubernetes'))}/bin/kube-apiserver)" in report
    assert "crds/keda.sh_scaledobjects.yaml: not written" in report
    assert report.endswith("8 families incomplete: run `uv run scaleladder-local toolchain`\n")


def test_a_complete_family_passes_the_check(tmp_path: Path) -> None:
    env = {"SCALELADDER_TOOLCHAIN": str(tmp_path), "PATH": os.environ["PATH"]}
    tools = Toolchain.load(env)
    kwok = tools.family("kwok")
    for name in ("kwok", "kwokctl"):
        fake_binary(tools.home(kwok) / "bin" / name, f"{name} version v0.8.0 go1.26.8 (linux/amd64)")
    assert toolchain.problems(tools, kwok, env) == []


def test_unknown_family_to_build_is_named(tmp_path: Path) -> None:
    tools = Toolchain.load({"SCALELADDER_TOOLCHAIN": str(tmp_path)})
    with pytest.raises(ToolchainError, match="unknown families kind; families: pulumi, pulumi-kubernetes"):
        toolchain.build(tools, {}, io.StringIO(), ["kind"])
