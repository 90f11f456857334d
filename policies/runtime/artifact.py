"""The exported artifact's spec (`policy.json`): read, check its format and every file's content hash.

    <dir>/policy.json   format, versions, observation/action spec, normaliser, horizons, scheme, graphs and their
                        noise inputs, the embodiment descriptor's layout, and the sha256 of every other file
    <dir>/*.onnx        the graphs (ONNX); *.pt2 the same graphs as torch.export programs (optional)
    <dir>/lang_table.npy  instruction embedding per task (language-conditioned policies)
    <dir>/base/         a residual specialist's base, itself an artifact

A file whose hash differs from the spec, a missing file, an unknown format or a newer format version is refused
with one line: an artifact that was changed after export is not run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from policies.errors import PolicyError

SPEC_FILE = "policy.json"
FORMAT = "alloy-artifact"
FORMAT_VERSION = 2  # 2: policy.json carries spec_sha256, the hash of its own content
KINDS = ("diffusion", "residual")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def spec_digest(spec: dict[str, Any]) -> str:
    """sha256 of policy.json's content without its own `spec_sha256` entry (keys sorted: byte-stable)."""
    body = {k: v for k, v in spec.items() if k != "spec_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def read_artifact(path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    root = Path(path)
    spec_file = root / SPEC_FILE
    if not spec_file.is_file():
        raise PolicyError(f"no exported policy at {root} (it has no {SPEC_FILE}); export one with `alloy export`")
    try:
        spec = json.loads(spec_file.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise PolicyError(f"{spec_file} is not valid JSON ({type(e).__name__}); the artifact is corrupt: export it "
                          f"again") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise PolicyError(f"{root} is not an alloy artifact (format {spec.get('format') if isinstance(spec, dict) else None!r})")
    if int(spec.get("format_version", -1)) > FORMAT_VERSION:
        raise PolicyError(f"{root} was exported by a newer alloy (format {spec.get('format_version')}); upgrade alloy")
    if spec.get("kind") not in KINDS or not isinstance(spec.get("files"), dict):
        raise PolicyError(f"{spec_file} is incomplete (kind or files missing); the artifact is corrupt")
    if verify:
        if int(spec.get("format_version", -1)) >= 2 and spec.get("spec_sha256") != spec_digest(spec):
            raise PolicyError(f"{spec_file} does not match its own hash (spec_sha256): the artifact's spec was "
                              f"modified after export; export it again")
        listed = set(spec["files"])
        for graph in (spec.get("graphs") or {}).values():
            for form in ("onnx", "pt2"):
                if isinstance(graph, dict) and graph.get(form) and graph[form] not in listed:
                    raise PolicyError(f"{spec_file} names the graph file {graph[form]} but has no hash for it: the "
                                      f"artifact was modified after export; export it again")
        for rel, digest in spec["files"].items():
            f = root / rel
            if not f.is_file():
                raise PolicyError(f"the artifact {root} lacks {rel}; copy the whole directory or export it again")
            if file_sha256(f) != digest:
                raise PolicyError(f"{f} does not match its hash in {SPEC_FILE}: the artifact was modified after "
                                  f"export; export it again")
    return spec
