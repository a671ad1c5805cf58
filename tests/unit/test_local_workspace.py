"""Generated stack files (never the checked-in ones) and the content-hash image tag."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.local import image, workspace
from components.local.cli import ROOT


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A repository-like folder: Pulumi.yaml and two stack files."""
    repo = tmp_path / "repo"
    (repo / "stacks").mkdir(parents=True)
    shutil.copy(ROOT / "Pulumi.yaml", repo / "Pulumi.yaml")
    (repo / "stacks" / "Pulumi.phase3.yaml").write_text(
        "config:\n  scaleladder:phase: 3\n  scaleladder:web:\n    replicas: 2\n"
    )
    (repo / "stacks" / "Pulumi.kind.yaml").write_text("config:\n  scaleladder:layer: cluster\n")
    return repo


WEB_IMAGE = "scaleladder/sample:0123456789ab"
POSTGRES_IMAGE = "scaleladder/postgres-patroni:ba9876543210"


def test_generated_file_adds_context_and_images_and_leaves_the_stack_file_alone(tmp_path: Path, root: Path) -> None:
    space = workspace.Workspace(tmp_path / "home")
    source = (root / "stacks" / "Pulumi.phase3.yaml").read_bytes()
    path = workspace.write(space, root, "phase3", "kind-scaleladder", [WEB_IMAGE, POSTGRES_IMAGE])
    assert path == tmp_path / "home" / "project" / "Pulumi.phase3.yaml"
    assert yaml.safe_load(path.read_text()) == {
        "config": {
            "scaleladder:phase": 3,
            "scaleladder:web": {"replicas": 2, "image": WEB_IMAGE},
            "kubernetes:context": "kind-scaleladder",
            "scaleladder:postgres": {"ha": {"image": POSTGRES_IMAGE}},
        }
    }
    assert (root / "stacks" / "Pulumi.phase3.yaml").read_bytes() == source
    project = yaml.safe_load((space.project / "Pulumi.yaml").read_text())
    assert (project["name"], project["runtime"]) == ("scaleladder", "python")
    assert (space.home / "state").is_dir()


def test_each_image_goes_into_its_setting_beside_the_checked_in_ones() -> None:
    checked_in = {
        "config": {
            "scaleladder:phase": 5,
            "scaleladder:postgres": {"replicas": 2, "ha": {"ttl": 40}},
        }
    }
    document = workspace.stack_document(checked_in, {}, "kind-x", [POSTGRES_IMAGE, WEB_IMAGE])
    assert document["config"] == {
        "scaleladder:phase": 5,
        "scaleladder:postgres": {"replicas": 2, "ha": {"ttl": 40, "image": POSTGRES_IMAGE}},
        "kubernetes:context": "kind-x",
        "scaleladder:web": {"image": WEB_IMAGE},
    }
    # the checked-in document is read, never changed
    assert checked_in["config"]["scaleladder:postgres"] == {"replicas": 2, "ha": {"ttl": 40}}
    # no image: only the context is added
    assert workspace.stack_document(checked_in, {}, "kind-x")["config"] == {
        **checked_in["config"],
        "kubernetes:context": "kind-x",
    }


def test_an_image_of_no_known_build_is_refused_naming_the_kit_images() -> None:
    assert workspace.image_build(WEB_IMAGE) is image.WEB
    assert workspace.image_build(POSTGRES_IMAGE) is image.POSTGRES
    for ref in ("x/y:1", "scaleladder/sample", "scaleladder/postgres:15"):
        with pytest.raises(ValueError) as raised:
            workspace.stack_document({}, {}, "kind-x", [ref])
        assert str(raised.value) == (
            f"--image {ref!r}: not one of the kit's images "
            "(scaleladder/sample:<tag>, scaleladder/postgres-patroni:<tag>)"
        )


def test_the_salt_pulumi_wrote_survives_the_next_run(tmp_path: Path, root: Path) -> None:
    space = workspace.Workspace(tmp_path / "home")
    path = workspace.write(space, root, "kind", "kind-scaleladder")
    salted = {"encryptionsalt": "v1:abc=:v1:def:ghi==", **yaml.safe_load(path.read_text())}
    path.write_text(yaml.safe_dump(salted))
    workspace.write(space, root, "kind", "kind-other")
    assert yaml.safe_load(path.read_text()) == {
        "encryptionsalt": "v1:abc=:v1:def:ghi==",
        "config": {"scaleladder:layer": "cluster", "kubernetes:context": "kind-other"},
    }


def test_unknown_stack(tmp_path: Path, root: Path) -> None:
    with pytest.raises(ValueError, match=r"stack 'phase9': no .*Pulumi.phase9.yaml; stack files: Pulumi.kind.yaml, "):
        workspace.write(workspace.Workspace(tmp_path), root, "phase9", "kind-scaleladder")


def test_home_comes_from_the_environment(tmp_path: Path) -> None:
    assert workspace.Workspace.from_env({"SCALELADDER_HOME": str(tmp_path)}).home == tmp_path
    assert workspace.Workspace.from_env({}).home == Path.home() / ".scaleladder"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_image_tag_is_a_hash_of_the_tracked_build_context(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    context = repo / "services" / "sample"
    context.mkdir(parents=True)
    git(repo, "init", "-q")
    (context / "Dockerfile").write_text("FROM python:3.11.14-slim\n")
    (context / "app.py").write_text("print('hi')\n")
    git(repo, "add", ".")
    first = image.image_ref(repo)
    assert first.startswith("scaleladder/sample:")
    assert len(first.split(":")[1]) == 12
    (context / "untracked.txt").write_text("not part of the hash\n")
    assert image.image_ref(repo) == first
    (context / "app.py").write_text("print('bye')\n")
    changed = image.image_ref(repo)
    assert changed != first
    (context / "app.py").write_text("print('hi')\n")
    assert image.image_ref(repo) == first


def test_each_build_is_tagged_by_its_own_context(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for build in image.BUILDS:
        (repo / build.context).mkdir(parents=True)
        (repo / build.context / "Dockerfile").write_text(f"FROM {build.repository}-base:1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    refs = image.image_refs(repo)
    assert list(refs) == [image.WEB, image.POSTGRES]
    assert refs[image.WEB] == image.image_ref(repo) == image.image_ref(repo, image.WEB)
    assert refs[image.POSTGRES] == image.image_ref(repo, image.POSTGRES)
    assert refs[image.POSTGRES].startswith("scaleladder/postgres-patroni:")
    assert len(refs[image.POSTGRES].split(":")[1]) == 12
    # a change to one context gives that image alone a new tag
    (repo / "images" / "postgres-patroni" / "Dockerfile").write_text("FROM postgres:15.18-bookworm\n")
    changed = image.image_refs(repo)
    assert changed[image.WEB] == refs[image.WEB] and changed[image.POSTGRES] != refs[image.POSTGRES]


def test_a_file_renamed_changes_the_tag(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("same")
    (tmp_path / "b").write_text("same")
    assert image.content_tag(tmp_path, ["a"]) != image.content_tag(tmp_path, ["b"])


def test_no_tracked_files_is_an_error(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    with pytest.raises(ValueError, match="git tracks no files under services/sample"):
        image.image_ref(tmp_path)


def test_no_tracked_files_for_the_postgres_image_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "services" / "sample").mkdir(parents=True)
    (tmp_path / "services" / "sample" / "Dockerfile").write_text("FROM python:3.11.14-slim\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    with pytest.raises(ValueError, match="git tracks no files under images/postgres-patroni"):
        image.image_refs(tmp_path)
