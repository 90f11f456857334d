"""Content hashes of files and directories, so that a checkpoint or artifact can say exactly what it was built on.

A directory's hash covers every regular file under it (relative path and bytes, in sorted order) and nothing else:
the same content gives the same hash wherever and whenever it was written, because alloy's files are byte-stable.
Names that start with a dot (leftovers of an interrupted atomic write) are not content and are skipped.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_files(root: str | os.PathLike) -> list[Path]:
    """The files a directory's hash covers, as paths relative to it, sorted."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                out.append((Path(dirpath) / name).relative_to(root))
    return sorted(out, key=lambda p: p.as_posix())


def tree_sha256(root: str | os.PathLike, exclude: tuple[str, ...] = ()) -> str:
    """One hash of every file under `root` (path and bytes); top-level names in `exclude` are left out."""
    root = Path(root)
    h = hashlib.sha256()
    for rel in content_files(root):
        if rel.parts[0] in exclude:
            continue
        h.update(rel.as_posix().encode("utf-8") + b"\0")
        h.update(file_sha256(root / rel).encode("ascii") + b"\n")
    return h.hexdigest()


# What a checkpoint holds besides the policy itself: resuming state and figures, not part of what the policy is.
TRAINING_FILES = ("train_state.safetensors", "train_state.json", "metrics.json")


def policy_sha256(root: str | os.PathLike) -> str:
    """The hash of a policy checkpoint directory's policy content (training state and metrics left out), so that a
    copy of the policy alone hashes the same as the checkpoint it came from."""
    return tree_sha256(root, exclude=TRAINING_FILES)
