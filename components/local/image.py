"""The kit's own images, named by a content hash of their build context, never `latest`.

Two images are built from this repository: the sample service (`services/sample`) and Postgres with
Patroni (`images/postgres-patroni`, the members of a Postgres group). A tag is the first 12 hex
digits of a sha256 over the files git tracks under the build context (path and content, sorted by
path, read from the work tree): the same sources always give the same tag, and any change gives a
new one, so a node never runs a stale image under a reused name.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

TAG_LENGTH = 12


@dataclass(frozen=True)
class Build:
    """One image the kit builds: its repository name, its build context, the stack setting it fills."""

    repository: str
    context: Path
    setting: tuple[str, ...]
    """Where the image's name goes in the stack's config: `("web", "image")` is `scaleladder:web.image`."""


WEB = Build("scaleladder/sample", Path("services/sample"), ("web", "image"))
POSTGRES = Build("scaleladder/postgres-patroni", Path("images/postgres-patroni"), ("postgres", "ha", "image"))
BUILDS = (WEB, POSTGRES)


def tracked_files(root: Path, context: Path) -> list[str]:
    """Paths git tracks under the build context, relative to the repository root, sorted."""
    listing = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--", str(context)],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(path for path in listing.split("\0") if path)


def content_tag(root: Path, files: list[str]) -> str:
    """sha256 over each file's path and bytes; a tracked file deleted in the work tree counts as empty."""
    digest = hashlib.sha256()
    for name in sorted(files):
        path = root / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"")
        digest.update(b"\0")
    return digest.hexdigest()[:TAG_LENGTH]


def image_ref(root: Path, build: Build = WEB) -> str:
    """`<repository>:<content hash>`; ValueError when git tracks nothing in the build context."""
    files = tracked_files(root, build.context)
    if not files:
        raise ValueError(f"git tracks no files under {build.context} in {root}: nothing to build the image from")
    return f"{build.repository}:{content_tag(root, files)}"


def image_refs(root: Path) -> dict[Build, str]:
    """Every image this checkout builds, by its build."""
    return {build: image_ref(root, build) for build in BUILDS}
