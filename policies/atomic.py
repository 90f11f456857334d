"""Atomic, durable and byte-stable writes of files and directories, and the one recovery rule every reader applies.

Files: `atomic_write_bytes/text/json/npz(path, ...)` (and `atomic_file(path)` for writers that need a file name)
write `.<name>.tmp-<host>-<pid>-<random>` in the same directory, fsync it, `os.replace` it onto `path` and fsync the
directory. A reader sees the old file or the new one, never a torn one.

Directories: `atomic_dir(path)` yields `.<name>.tmp-<host>-<pid>-<random>/`; on success every file and folder in it
(subfolders included) is fsynced, the current `path` is renamed to `.<name>.old`, the new one renamed to `path`, the
parent fsynced and `.<name>.old` removed. `replace_dir(src, path)` is the same swap for a directory built elsewhere
(datasets are staged under the data root). At every moment the old or the new copy exists.

Recovery, `recover_dir(path)`: every reader calls it before it looks at `path`, and every writer before it writes:

1. `path` missing and `.<name>.old` present: a writer died between its two renames; `.<name>.old` is renamed back
   (the rollback is completed). While that writer is still alive the reader first waits a moment for it to finish.
2. `path` and `.<name>.old` both present, no live writer: a writer died after its second rename; `.old` is removed.
3. `.<name>.tmp-*` of a dead writer is removed. A writer is dead when its tag names this host and its pid is not
   running; a temp entry of another host, or without a tag, counts as dead once it is older than the complete copy at
   `path` or than `STALE_AFTER_S`.

Byte stability: `write_safetensors` writes `__metadata__` with sorted keys (the safetensors library serialises it from
a Rust HashMap, whose iteration order is seeded at random in every process, whatever PYTHONHASHSEED says), and
`npz_bytes` gives every member a fixed date and mode, so identical content gives identical bytes in any process.
Text and JSON are written as UTF-8 bytes (never in the locale's encoding).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Mapping

STALE_AFTER_S = 6 * 3600.0  # a temp entry of another host (or untagged) older than this belongs to a dead writer
ROLLBACK_WAIT_S = 2.0  # how long a reader waits for a live writer between its two renames before rolling back
_SWAP_TRIES = 5
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _read_umask() -> int:
    """The process umask, read without changing it where /proc tells it (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_umask = _read_umask()
_TAG = re.compile(r"(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)-")


# ---------------------------------------------------------------------------------------------------- writer tags
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40]


def writer_tag() -> str:
    """`<host>-<pid>` of this process: the prefix that lets a later reader tell whether a temp entry's writer lives."""
    return f"{_host()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else
    return True


def _mtime(path: Path) -> float | None:
    try:
        return path.lstat().st_mtime
    except OSError:
        return None


def writer_is_dead(tag: str, entry: Path, complete: Path | None = None) -> bool:
    """Whether the writer of temp entry `entry` can no longer finish it. `tag` is the entry's name after its prefix
    (`<host>-<pid>-...`), `complete` the finished copy the entry would replace. On this host: the pid is not running
    (a reused pid only keeps a leftover longer). Another host's entry, or an untagged one: older than `complete` or
    than `STALE_AFTER_S`."""
    m = _TAG.match(tag)
    if m and m["host"] == _host():
        return not _pid_alive(int(m["pid"]))
    age_ref = _mtime(entry)
    if age_ref is None:
        return False
    newest = _mtime(complete) if complete is not None else None
    return (newest is not None and age_ref < newest) or time.time() - age_ref > STALE_AFTER_S


def _remove(entry: Path) -> None:
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    except OSError:
        pass


def remove_stale_children(folder: str | os.PathLike) -> None:
    """Remove the entries of `folder` named `<host>-<pid>-...` whose writer is dead (e.g. a data root's `.staging/`)."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        if writer_is_dead(entry.name, entry):
            _remove(entry)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _old(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


def _clean_temps(path: Path) -> bool:
    """Remove the dead writers' `.<name>.tmp-*` beside `path`; True when a live writer's temp entry is there."""
    prefix, live = _temp_prefix(path), False
    try:
        with os.scandir(path.parent) as it:
            entries = [e.name for e in it if e.name.startswith(prefix)]
    except OSError:
        return False
    for name in entries:
        entry = path.parent / name
        if writer_is_dead(name[len(prefix):], entry, path):
            _remove(entry)
        else:
            live = True
    return live


# ---------------------------------------------------------------------------------------------------- fsync
def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of directory `path` (creations, renames) durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory (deepest first, `root` last)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            f = os.path.join(dirpath, name)
            if os.path.islink(f):
                continue
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(dirpath)


# ---------------------------------------------------------------------------------------------------- files
@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ""):
    """Yields a temp file path beside `path` (ending in `suffix`, for writers that pick a format by extension); on
    normal exit it is fsynced and replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_temps(path)
    fd, name = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{writer_tag()}-", suffix=suffix, dir=path.parent)
    tmp = Path(name)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o666 & ~_umask)  # mkstemp makes 0600; give the file the mode open() would
        finally:
            os.close(fd)
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Write `data` to `path` atomically and durably (temp file in the same directory, fsync, rename, fsync dir)."""
    path = Path(path)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      default=None, newline: bool = True) -> Path:
    """`json.dumps(obj, indent=..., sort_keys=..., default=...)` (plus a final newline) written atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)
    return atomic_write_text(path, text + ("\n" if newline else ""))


def npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    """An `.npz` of `arrays` (what `np.savez(f, **arrays)` writes) whose members all carry the same fixed date and
    mode, whatever the clock or numpy version, so identical arrays give identical bytes. Loads with
    `np.load(..., allow_pickle=False)`."""
    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return buf.getvalue()


def atomic_write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> Path:
    """An `.npz` of `arrays`, byte-stable (see `npz_bytes`) and written atomically."""
    return atomic_write_bytes(path, npz_bytes(arrays))


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
                      ) -> Path:
    """`safetensors.torch.save_file` with a canonical header: `__metadata__` keys sorted, so the same tensors and
    metadata give the same bytes in every process (the library orders them by a per-process random hash)."""
    from safetensors.torch import save

    blob = memoryview(save(dict(tensors), metadata=dict(metadata) if metadata else None))
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(bytes(blob[8 : 8 + n]))
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header["__metadata__"].items())),
                  **{k: v for k, v in header.items() if k != "__metadata__"}}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the library aligns the data to 8 bytes the same way
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(blob[8 + n :])
    return Path(path)


# ---------------------------------------------------------------------------------------------------- directories
def recover_dir(path: str | os.PathLike) -> Path:
    """Apply the recovery rule (module docstring) to the atomically written directory `path` and return the
    directory to read: `path`, or `.<name>.old` where the rollback could not be completed (read-only storage)."""
    path = Path(path)
    old = _old(path)
    try:
        live = _clean_temps(path)
        if not path.exists() and old.is_dir():
            deadline = time.monotonic() + (ROLLBACK_WAIT_S if live else 0.0)
            while live and not path.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not path.exists():
                with contextlib.suppress(FileNotFoundError):
                    os.replace(old, path)
                fsync_dir(path.parent)
        elif old.exists() and path.exists() and not live:
            _remove(old)
    except OSError:
        pass  # read-only or vanished storage: read whatever is there
    if not path.exists() and old.is_dir():
        return old
    return path


def replace_dir(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Swap the finished directory `src` in at `path` (same filesystem): fsync its tree, move the current copy aside
    to `.<name>.old`, rename `src` to `path`, fsync the parent, remove the old copy."""
    src, path = Path(src), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _fsync_tree(src)
    old = _old(path)
    for attempt in range(_SWAP_TRIES):
        if old.exists():  # leftovers of an earlier crash: settle them first (see recover_dir)
            if path.exists():
                _remove(old)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.replace(old, path)
        moved_aside = False
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, old)
            moved_aside = True
        try:
            os.replace(src, path)
            break
        except OSError as e:
            # A reader completed the rollback between our two renames (path is back): move it aside again.
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and attempt + 1 < _SWAP_TRIES:
                continue
            if moved_aside and not path.exists():
                with contextlib.suppress(OSError):
                    os.replace(old, path)
            raise
    fsync_dir(path.parent)
    _remove(old)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yields a temporary directory; on normal exit it replaces `path` (`replace_dir`), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_temp_prefix(path)}{writer_tag()}-", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask)
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
