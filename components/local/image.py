"""The sample service's image name: a content hash of its build context, never `latest`.

The tag is the first 12 hex digits of a sha256 over the files git tracks under services/sample
(path and content, sorted by path, read from the work tree): the same sources always give the same
tag, and any change gives a new one, so a node never runs a stale image under a reused name.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

REPOSITORY = "scaleladder/sample"
CONTEXT = Path("services/sample")
TAG_LENGTH = 12


def tracked_files(root: Path, context: Path = CONTEXT) -> list[str]:
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


def image_ref(root: Path, context: Path = CONTEXT) -> str:
    """`scaleladder/sample:<content hash>`; ValueError when git tracks nothing there."""
    files = tracked_files(root, context)
    if not files:
        raise ValueError(f"git tracks no files under {context} in {root}: nothing to build the image from")
    return f"{REPOSITORY}:{content_tag(root, files)}"
