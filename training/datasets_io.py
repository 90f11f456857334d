"""Reading and writing alloy's demonstration datasets in Minari's format, with one-line errors.

Datasets live under the data root (`ALLOY_DATA_DIR`, default `~/.cache/alloy/datasets`, defined once in
`envs.language`); Minari is pointed at it through `MINARI_DATASETS_PATH`. A dataset is written to a hidden staging
folder (`.staging/<host>-<pid>-<uuid>/`) first and swapped into place whole with `policies.atomic.replace_dir`, so at
every moment the old or the new dataset exists and an interrupted collection never leaves a half-written dataset that
looks valid. Readers apply `policies.atomic.recover_dir` (through `dataset_dir`), which completes the rollback of a
swap killed between its two renames; `write_dataset` and `list_datasets` remove the staging folders of dead writers.
alloy's own metadata (suite, env id and kwargs, teacher, seeds, version, instruction) sits under the `alloy` key of
Minari's dataset metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policies.version import alloy_version  # noqa: F401 - re-exported for collect
from training.errors import DatasetError

STAGING_DIR = ".staging"


def data_root() -> Path:
    """The data root, created if needed; also points Minari (`MINARI_DATASETS_PATH`) at it."""
    from envs.language import data_dir

    root = data_dir().resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    return root


def dataset_dir(dataset_id: str) -> Path:
    """The folder of a dataset (it holds Minari's `data/` and alloy's statistics file), after the recovery rule of
    `policies.atomic.recover_dir` (a replacement killed between its two renames is rolled back)."""
    from policies.atomic import recover_dir

    path = data_root() / dataset_id
    recover_dir(path)
    return path


def _recover_all(root: Path) -> None:
    """Complete the rollback of every dataset whose replacement was killed between its two renames (their previous
    copy waits at `.<name>.old`, which Minari's listing skips as hidden), and remove dead writers' staging folders."""
    from policies.atomic import recover_dir, remove_stale_children

    remove_stale_children(root / STAGING_DIR)
    for dirpath, dirnames, _ in os.walk(root):
        if "data" in dirnames:  # a dataset: nothing nested below it
            dirnames[:] = []
            continue
        for name in dirnames:
            if name.startswith(".") and name.endswith(".old") and len(name) > 5:
                recover_dir(Path(dirpath) / name[1:-4])
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]


def list_datasets(prefix: str | None = None) -> list[str]:
    """Ids of the datasets under the data root (optionally those starting with `prefix`), sorted."""
    import minari

    _recover_all(data_root())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about damaged datasets; `open_dataset` explains them
        found = minari.list_local_datasets()
    return sorted(i for i in found if prefix is None or i.startswith(prefix))


def _existing_hint() -> str:
    existing = list_datasets()
    if not existing:
        return f"no datasets exist under {data_root()} yet; create one with `alloy collect`"
    return f"existing datasets: {', '.join(existing)}"


def open_dataset(dataset_id: str):
    """The `minari.MinariDataset` of `dataset_id`; DatasetError if it is missing, corrupt or truncated."""
    import minari

    path = dataset_dir(dataset_id)
    if not (path / "data").is_dir():
        raise DatasetError(f"dataset {dataset_id!r} not found under {data_root()}; {_existing_hint()}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = minari.load_dataset(dataset_id)
            dataset.storage.get_size()  # opens the data file, so damage shows here rather than mid-training
    except (OSError, ValueError, KeyError, AssertionError, json.JSONDecodeError) as e:
        raise DatasetError(
            f"dataset {dataset_id!r} at {path} is corrupt or truncated ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'unreadable'}); delete it and collect it again"
        ) from None
    return dataset


@dataclass
class Episode:
    """One rollout as arrays: T+1 observations per key, T actions, per-step rewards and end flags."""

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None = None
    success: bool = False
    infos: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.actions)


@dataclass
class EpisodeArrays:
    """All episodes of a dataset concatenated: contiguous arrays plus per-episode offsets."""

    observations: dict[str, np.ndarray]  # key -> float32 (sum of (T+1), d)
    actions: np.ndarray  # float32 (sum of T, da)
    lengths: np.ndarray  # int64 (E,) number of actions per episode
    metadata: dict[str, Any]
    action_std: np.ndarray | None = None  # float32 (sum of T, da): a Gaussian labeller's std per action, if any

    @property
    def obs_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths + 1)[:-1]]).astype(np.int64)

    @property
    def action_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(len(x), -1)


def read_episodes(dataset_id: str) -> EpisodeArrays:
    """Load a whole dataset into contiguous float32 arrays (flattening each observation key to a vector)."""
    dataset = open_dataset(dataset_id)
    path = dataset_dir(dataset_id)
    obs_parts: dict[str, list[np.ndarray]] = {}
    action_parts: list[np.ndarray] = []
    lengths: list[int] = []
    try:
        for ep in dataset.storage.get_episodes(range(dataset.storage.total_episodes)):
            observations = ep["observations"]
            if not isinstance(observations, dict):
                observations = {"obs": observations}
            actions = _as_2d(ep["actions"])
            for key, value in observations.items():
                value = _as_2d(value)
                if len(value) != len(actions) + 1:
                    raise ValueError(f"episode {ep['id']} has {len(value)} '{key}' observations for {len(actions)} actions")
                obs_parts.setdefault(key, []).append(value)
            action_parts.append(actions)
            lengths.append(len(actions))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(
            f"dataset {dataset_id!r} at {path} is corrupt or truncated ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'unreadable'}); delete it and collect it again"
        ) from None
    if not lengths:
        raise DatasetError(f"dataset {dataset_id!r} has no episodes; collect it again with more episodes")
    return EpisodeArrays(
        observations={k: np.ascontiguousarray(np.concatenate(v)) for k, v in obs_parts.items()},
        actions=np.ascontiguousarray(np.concatenate(action_parts)),
        lengths=np.asarray(lengths, dtype=np.int64),
        metadata=dict(dataset.storage.metadata),
    )


def alloy_metadata(dataset_id: str) -> dict[str, Any]:
    """alloy's metadata of a dataset (suite, env id, env kwargs, teacher, seeds, version, instruction)."""
    return dict(open_dataset(dataset_id).storage.metadata.get("alloy") or {})


@contextmanager
def _minari_root(path: Path):
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def _buffer(index: int, episode: Episode):
    from minari.data_collector import EpisodeBuffer

    n = len(episode)
    return EpisodeBuffer(
        id=index,
        seed=episode.seed,
        observations={k: np.asarray(v, dtype=np.float32) for k, v in episode.observations.items()},
        actions=np.asarray(episode.actions, dtype=np.float32),
        rewards=[float(r) for r in np.asarray(episode.rewards).reshape(n)],
        terminations=[bool(t) for t in np.asarray(episode.terminations).reshape(n)],
        truncations=[bool(t) for t in np.asarray(episode.truncations).reshape(n)],
        infos={"success": np.asarray([bool(episode.success)] * (n + 1))},
    )


def write_dataset(
    dataset_id: str,
    episodes: Sequence[Episode],
    metadata: dict[str, Any],
    env_spec=None,
    observation_space=None,
    action_space=None,
    algorithm_name: str = "",
    description: str = "",
    overwrite: bool = False,
    requirements: Sequence[str] = (),
) -> Path:
    """Write `episodes` as the Minari dataset `dataset_id` (atomically: staged, then swapped into place so that
    the old or the new dataset exists at every moment, see `policies.atomic.replace_dir`).

    `env_spec` (a registered Gymnasium spec) lets `dataset.recover_environment()` rebuild the env; without one,
    pass the observation and action spaces."""
    import minari

    from policies.atomic import remove_stale_children, replace_dir, writer_tag

    root = data_root()
    final = dataset_dir(dataset_id)
    if (final / "data").exists() and not overwrite:
        raise DatasetError(f"dataset {dataset_id!r} already exists at {final}; pass overwrite=true to replace it")
    if not episodes:
        raise DatasetError(f"no episodes to write for {dataset_id!r} (with only_success=true every rollout failed)")
    remove_stale_children(root / STAGING_DIR)  # what killed writers left behind
    staging = root / STAGING_DIR / f"{writer_tag()}-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        with _minari_root(staging), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=[_buffer(i, ep) for i, ep in enumerate(episodes)],
                env=env_spec,
                observation_space=observation_space,
                action_space=action_space,
                algorithm_name=algorithm_name or None,
                author="alloy",
                description=description or None,
                requirements=list(requirements) or None,
            )
            dataset.storage.update_metadata({"alloy": _jsonable(metadata)})
        # Namespace metadata files Minari keeps beside the datasets: copy those the data root lacks.
        for src in staging.rglob("namespace_metadata.json"):
            dst = root / src.relative_to(staging)
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        replace_dir(staging / dataset_id, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    data_root()
    return final


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
