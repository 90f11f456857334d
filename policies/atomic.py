"""Atomic directory writes: build the directory under a temporary name, then swap it in with renames.

A crash at any point leaves either the old directory or the new one at the final path, never a half-written
one (between the two renames the old copy sits at `.<name>.old`, which `resolve_dir` falls back to).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yields a temporary directory; on normal exit it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        for f in tmp.iterdir():  # make the files durable before they become visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = path.parent / f".{path.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_dir(path: str | os.PathLike) -> Path:
    """`path`, or its previous copy when a crash happened between the two renames of `atomic_dir`."""
    path = Path(path)
    old = path.parent / f".{path.name}.old"
    if not path.exists() and old.is_dir():
        return old
    return path
