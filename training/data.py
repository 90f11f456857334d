"""Training windows over one or many Minari datasets, their normaliser statistics and spec checks.

`WindowDataset` turns episodes (of Minari datasets, or held in memory: `MemoryEpisodes`, appended between DAgger
rounds) into Diffusion-Policy samples: To observations ending at step t and Tp actions
starting at t-To+1, padded at episode edges by repeating the first observation / first action before the start and
the last action after the end. Everything lives in contiguous NumPy arrays with precomputed per-sample index
tables, and a batch is gathered with one fancy-indexing call per key (`__getitems__`), so the loader is never the
bottleneck of training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from training.batches import StepBatchSampler
from training.datasets_io import (
    Episode,
    EpisodeArrays,
    alloy_metadata,
    dataset_dir,
    list_datasets,
    open_dataset,
    read_episodes,
)
from training.errors import DatasetError

__all__ = [
    "WindowDataset",
    "MemoryEpisodes",
    "compute_stats",
    "dataset_stats",
    "check_spaces",
    "list_datasets",
    "LANG_DIM",
]

LANG_DIM = 384
STATS_FILE = "alloy_stats.npz"
STAT_NAMES = ("min", "max", "mean", "std")
STATE_KEY = "state"


# ----------------------------------------------------------------------------------------------------------------
# Normaliser statistics
# ----------------------------------------------------------------------------------------------------------------


def _fingerprint(dataset_id: str) -> np.ndarray:
    """Identifies the data the statistics were computed from: a SHA-256 of the data files' names and bytes (cheap
    beside reading them, which training does anyway), so the statistics file depends on the content only, not on
    when or where the dataset was written or copied."""
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(p for p in (dataset_dir(dataset_id) / "data").glob("*") if p.is_file()):
        digest.update(f"{f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return np.frombuffer(digest.digest(), dtype=np.uint8).copy()


def _bad_episodes(values: np.ndarray, starts: np.ndarray) -> list[int]:
    """Indices of the episodes (rows from `starts` on) holding a NaN or inf."""
    rows = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    return sorted({int(i) for i in np.searchsorted(starts, rows, side="right") - 1})


def _check_finite(name: str, columns: dict[str, np.ndarray], arrays: EpisodeArrays) -> None:
    """DatasetError naming the dataset, the key and the episodes when the data holds NaN or inf: no normaliser or
    training can use it, and recomputing statistics cannot fix it."""
    for key, values in columns.items():
        if np.isfinite(values).all():
            continue
        starts = arrays.action_starts if key == "action" else arrays.obs_starts
        episodes = _bad_episodes(values, starts)
        shown = ", ".join(map(str, episodes[:5])) + (", ..." if len(episodes) > 5 else "")
        raise DatasetError(f"dataset {name!r} has NaN or inf values in '{key}' (episode(s) {shown} of "
                           f"{len(arrays.lengths)}); re-collect it (alloy collect ... overwrite=true) or drop those "
                           f"episodes, and check the env or teacher that produced them")


def _stats_of(arrays: EpisodeArrays, name: str = "in memory") -> dict[str, dict[str, np.ndarray]]:
    out = {}
    columns = dict(arrays.observations)
    columns["action"] = arrays.actions
    _check_finite(name, columns, arrays)
    for key, values in columns.items():
        v = values.astype(np.float64)
        out[key] = {
            "min": v.min(axis=0),
            "max": v.max(axis=0),
            "mean": v.mean(axis=0),
            "std": v.std(axis=0),
            "count": np.asarray(len(v), dtype=np.int64),
        }
    return out


def _save_stats(dataset_id: str, stats: dict[str, dict[str, np.ndarray]]) -> None:
    """Atomically, and byte-stable: the same statistics of the same files give the same bytes in any process."""
    from policies.atomic import atomic_write_npz

    flat = {f"{key}/{name}": value for key, entry in stats.items() for name, value in entry.items()}
    flat["__fingerprint__"] = _fingerprint(dataset_id)
    atomic_write_npz(dataset_dir(dataset_id) / STATS_FILE, flat)


def _load_stats(dataset_id: str) -> dict[str, dict[str, np.ndarray]] | None:
    path = dataset_dir(dataset_id) / STATS_FILE
    try:
        with np.load(path, allow_pickle=False) as f:
            if not np.array_equal(f["__fingerprint__"], _fingerprint(dataset_id)):
                return None  # the dataset was rewritten since
            stats: dict[str, dict[str, np.ndarray]] = {}
            for name in f.files:
                if name == "__fingerprint__":
                    continue
                key, _, stat = name.rpartition("/")
                stats.setdefault(key, {})[stat] = f[name]
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing or damaged: recompute
    return stats


def dataset_stats(dataset_id: str, arrays: EpisodeArrays | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per-key statistics of one dataset (with `count`), computed once and saved beside the dataset."""
    stats = _load_stats(dataset_id)
    if stats is not None and not all(np.isfinite(e[n]).all() for e in stats.values() for n in ("min", "max")):
        stats = None  # cached from data with NaN/inf: recomputing names the key and episodes
    if stats is None:
        stats = _stats_of(arrays if arrays is not None else read_episodes(dataset_id), dataset_id)
        _save_stats(dataset_id, stats)
    return stats


def _merge(parts: Sequence[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Exact statistics of the union of datasets from each one's count, mean, std, min and max (float64)."""
    merged = {}
    for key in parts[0]:
        counts = np.asarray([float(p[key]["count"]) for p in parts])
        means = np.stack([p[key]["mean"] for p in parts])
        stds = np.stack([p[key]["std"] for p in parts])
        total = counts.sum()
        mean = (counts[:, None] * means).sum(0) / total
        var = (counts[:, None] * (stds**2 + (means - mean) ** 2)).sum(0) / total
        merged[key] = {
            "min": np.min(np.stack([p[key]["min"] for p in parts]), axis=0),
            "max": np.max(np.stack([p[key]["max"] for p in parts]), axis=0),
            "mean": mean,
            "std": np.sqrt(np.maximum(var, 0.0)),
        }
    return merged


def compute_stats(dataset_ids: str | Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Normaliser statistics `{key: {min, max, mean, std}}` (float64) over all datasets, for every observation
    key and `action`; each dataset's part is computed once and cached beside it."""
    ids = [dataset_ids] if isinstance(dataset_ids, str) else list(dataset_ids)
    if not ids:
        raise DatasetError("no dataset ids given; pass at least one dataset id")
    parts = [dataset_stats(i) for i in ids]
    keys = set(parts[0])
    for i, p in zip(ids[1:], parts[1:]):
        if set(p) != keys:
            raise DatasetError(
                f"dataset {i!r} has keys {sorted(p)} but {ids[0]!r} has {sorted(keys)}; mix only datasets of one suite"
            )
    return _merge(parts)


# ----------------------------------------------------------------------------------------------------------------
# Spec checks
# ----------------------------------------------------------------------------------------------------------------


def _space_shapes(observation_space) -> dict[str, tuple[int, ...]]:
    spaces = getattr(observation_space, "spaces", None)
    if isinstance(spaces, Mapping):
        return {k: (int(np.prod(s.shape)),) for k, s in spaces.items()}
    return {"obs": (int(np.prod(observation_space.shape)),)}


def check_spaces(
    obs_shapes: Mapping[str, tuple],
    action_dim: int,
    expected_obs: Mapping[str, tuple] | None,
    expected_action_dim: int | None,
    what: str,
    name: str = "the dataset",
    require_all_keys: bool = False,
) -> None:
    """Raise one DatasetError naming the first key whose shape differs between `name` and `what`.

    Every key `what` expects must be in the dataset with the same (flattened) size; with `require_all_keys` the
    dataset may not have keys `what` lacks either (an env must produce everything a dataset holds).
    """
    def size(shape) -> int:
        return int(np.prod(tuple(shape))) if len(tuple(shape)) else 1

    if expected_obs is not None:
        for key, shape in expected_obs.items():
            if key not in obs_shapes:
                raise DatasetError(
                    f"{what} expects observation key '{key}' of shape {tuple(shape)} but {name} has only "
                    f"{', '.join(f'{k} {tuple(v)}' for k, v in obs_shapes.items())}; use a dataset collected in that env"
                )
            if size(shape) != size(obs_shapes[key]):
                raise DatasetError(
                    f"observation '{key}' has shape {tuple(obs_shapes[key])} in {name} but {tuple(shape)} in {what}; "
                    f"use a dataset collected in that env"
                )
        if require_all_keys:
            extra = [k for k in obs_shapes if k not in expected_obs]
            if extra:
                raise DatasetError(
                    f"observation '{extra[0]}' of shape {tuple(obs_shapes[extra[0]])} in {name} is missing in {what}; "
                    f"use a dataset collected in that env"
                )
    if expected_action_dim is not None and int(expected_action_dim) != int(action_dim):
        raise DatasetError(
            f"action has shape ({action_dim},) in {name} but ({int(expected_action_dim)},) in {what}; "
            f"use a dataset collected in that env"
        )


# ----------------------------------------------------------------------------------------------------------------
# The window dataset
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class MemoryEpisodes:
    """Episodes held in memory as one source of a `WindowDataset` (e.g. the labelled data of DAgger rounds).

    `actions="labels"` trains on the labeller's actions (`Episode.infos["labels"]`, recorded by the rollout engine
    beside the executed ones) instead of the executed actions; when every episode also holds the labeller's
    standard deviations (`infos["label_std"]`), windows carry them as `action_std` (for KL students).
    `metadata` plays the role of a Minari dataset's
    alloy metadata (e.g. `instruction`, `env_id`).
    """

    name: str
    episodes: list[Episode] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    actions: str = "executed"

    def __post_init__(self) -> None:
        if self.actions not in ("executed", "labels"):
            raise DatasetError(f"MemoryEpisodes.actions must be 'executed' or 'labels', got {self.actions!r}")

    def arrays(self) -> EpisodeArrays:
        if not self.episodes:
            raise DatasetError(f"in-memory source {self.name!r} has no episodes; record some before training on it")
        obs: dict[str, list[np.ndarray]] = {}
        acts, lengths, stds = [], [], []
        for i, ep in enumerate(self.episodes):
            a = ep.infos.get("labels") if self.actions == "labels" else ep.actions
            std = ep.infos.get("label_std") if self.actions == "labels" else None
            stds.append(None if std is None else np.asarray(std, dtype=np.float32).reshape(len(ep.actions), -1))
            if a is None:
                raise DatasetError(f"episode {i} of {self.name!r} has no labels; record it with a labeller")
            a = np.asarray(a, dtype=np.float32).reshape(len(ep.actions), -1)
            for k, v in ep.observations.items():
                v = np.asarray(v, dtype=np.float32).reshape(len(v), -1)
                if len(v) != len(a) + 1:
                    raise DatasetError(f"episode {i} of {self.name!r} has {len(v)} '{k}' observations for "
                                       f"{len(a)} actions; an episode holds T+1 observations")
                obs.setdefault(k, []).append(v)
            acts.append(a)
            lengths.append(len(a))
        action_std = np.ascontiguousarray(np.concatenate(stds)) if all(s is not None for s in stds) else None
        return EpisodeArrays(observations={k: np.ascontiguousarray(np.concatenate(v)) for k, v in obs.items()},
                             actions=np.ascontiguousarray(np.concatenate(acts)),
                             lengths=np.asarray(lengths, dtype=np.int64), metadata={"alloy": dict(self.metadata)},
                             action_std=action_std)


Source = Union[str, MemoryEpisodes]


def _source_name(source: Source) -> str:
    return source if isinstance(source, str) else source.name


def _instruction_embedding(instruction: str | None) -> np.ndarray:
    if not instruction:
        return np.zeros(LANG_DIM, dtype=np.float32)
    from envs.language import embed

    return embed(instruction)


class WindowDataset(Dataset):
    """Windows of To observations and Tp actions over one or many sources (Minari dataset ids or `MemoryEpisodes`),
    mixed with per-source weights. `extend(name, episodes)` appends episodes to an in-memory source and rebuilds
    the index tables (statistics of in-memory sources are recomputed; Minari ones stay cached).

    A sample is `{obs: {key: (To, d)}, action: (Tp, da), goal: (d_state,), future_state: (d_state,),
    lang: (384,), dataset_index: int64}`, plus `action_std: (Tp, da)` when every source carries a labeller's
    standard deviations. `goal` is the episode's last `state` observation and `future_state` the
    one `future_steps` ahead of the current step (clamped at the episode's end).

    With `action_horizon=Ta` the sample positions follow Diffusion Policy's sampler exactly (at most Ta-1 actions
    padded after the end); by default every step of every episode is the current step of one sample.
    """

    def __init__(
        self,
        dataset_ids: Source | Sequence[Source],
        obs_horizon: int = 2,
        pred_horizon: int = 16,
        weights: Sequence[float] | None = None,
        action_horizon: int | None = None,
        future_steps: int | None = None,
        state_key: str = STATE_KEY,
    ) -> None:
        sources = [dataset_ids] if isinstance(dataset_ids, (str, MemoryEpisodes)) else list(dataset_ids)
        ids = [_source_name(x) for x in sources]
        if not ids:
            raise DatasetError("no dataset ids given; pass at least one dataset id")
        if len(set(ids)) != len(ids):
            raise DatasetError(f"dataset ids repeat in {ids}; give each dataset once and use weights to mix")
        To, Tp = int(obs_horizon), int(pred_horizon)
        if To < 1 or Tp < 1:
            raise DatasetError(f"obs_horizon and pred_horizon must be >= 1, got {To} and {Tp}")
        if action_horizon is not None and not 1 <= int(action_horizon) <= Tp - To + 1:
            raise DatasetError(
                f"action_horizon={action_horizon} does not fit: it must be in [1, pred_horizon - obs_horizon + 1] "
                f"= [1, {Tp - To + 1}]"
            )
        if weights is not None:
            w = np.asarray(list(weights), dtype=np.float64)
            if w.shape != (len(ids),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise DatasetError(
                    f"weights must be {len(ids)} non-negative numbers (one per dataset) with a positive sum, "
                    f"got {list(weights)}"
                )
        self.dataset_ids = ids
        self.sources = sources
        self._weights_arg = None if weights is None else list(weights)
        self.obs_horizon, self.pred_horizon = To, Tp
        self.action_horizon = None if action_horizon is None else int(action_horizon)
        self.future_steps = Tp if future_steps is None else int(future_steps)
        if self.future_steps < 0:
            raise DatasetError(f"future_steps must be >= 0, got {future_steps}")
        self.state_key = state_key

        self._parts = [read_episodes(x) if isinstance(x, str) else x.arrays() for x in sources]
        self._stats_parts = [dataset_stats(x, p) if isinstance(x, str) else _stats_of(p, x.name)
                             for x, p in zip(sources, self._parts)]
        self._index()

    def _index(self) -> None:
        """(Re)build the contiguous arrays, index tables, counts and weights from the sources' episodes."""
        parts, ids = self._parts, self.dataset_ids
        To, Tp, weights = self.obs_horizon, self.pred_horizon, self._weights_arg
        self.metadata = [p.metadata.get("alloy") or {} for p in parts]
        self._check_same_spaces(parts)
        observed = list(parts[0].observations)
        if self.state_key == STATE_KEY and self.state_key not in observed and len(observed) == 1:
            self.state_key = observed[0]  # one flat observation (a Gymnasium env's `obs`) is the state
        if self.state_key not in parts[0].observations:
            raise DatasetError(
                f"the datasets have no '{self.state_key}' observation for goals (keys: "
                f"{', '.join(parts[0].observations)}); pass state_key=<one of those>"
            )
        self._build(parts)
        counts = np.bincount(self._sample_dataset, minlength=len(ids)) if len(self) else np.zeros(len(ids), np.int64)
        if len(self) == 0:
            raise DatasetError(
                f"no window fits in the episodes of {ids} (obs_horizon={To}, pred_horizon={Tp}, "
                f"action_horizon={self.action_horizon}); use shorter horizons"
            )
        self.samples_per_dataset = counts
        if weights is None:
            self.weights = counts / counts.sum()
        else:
            w = np.asarray(list(weights), dtype=np.float64)
            w[counts == 0] = 0.0
            if w.sum() <= 0:
                raise DatasetError(f"every dataset with a positive weight is empty for these horizons: {ids}")
            self.weights = w / w.sum()
        self.mixed = weights is not None

    def extend(self, name: str, episodes: Sequence[Episode]) -> None:
        """Append `episodes` to the in-memory source `name` and rebuild the windows (DAgger's aggregation)."""
        j = next((i for i, x in enumerate(self.sources) if isinstance(x, MemoryEpisodes) and x.name == name), None)
        if j is None:
            known = [x.name for x in self.sources if isinstance(x, MemoryEpisodes)]
            raise DatasetError(f"no in-memory source named {name!r} (in-memory sources: {known or 'none'})")
        source = self.sources[j]
        source.episodes.extend(episodes)
        self._parts[j] = source.arrays()
        self._stats_parts[j] = _stats_of(self._parts[j], name)
        self._index()

    # -- construction ---------------------------------------------------------------------------------------------

    def _check_same_spaces(self, parts: list[EpisodeArrays]) -> None:
        ref = parts[0]
        ref_shapes = {k: v.shape[1:] for k, v in ref.observations.items()}
        for i, p in zip(self.dataset_ids[1:], parts[1:]):
            shapes = {k: v.shape[1:] for k, v in p.observations.items()}
            check_spaces(
                shapes,
                p.actions.shape[1],
                ref_shapes,
                ref.actions.shape[1],
                what=f"dataset {self.dataset_ids[0]!r}",
                name=f"dataset {i!r}",
                require_all_keys=True,
            )

    def _build(self, parts: list[EpisodeArrays]) -> None:
        To, Tp = self.obs_horizon, self.pred_horizon
        pad_after = (self.action_horizon - 1) if self.action_horizon is not None else Tp - To
        self.obs_keys = list(parts[0].observations)
        self._obs = {k: np.ascontiguousarray(np.concatenate([p.observations[k] for p in parts])) for k in self.obs_keys}
        self._actions = np.ascontiguousarray(np.concatenate([p.actions for p in parts]))
        stds = [p.action_std for p in parts]
        self._action_std = (np.ascontiguousarray(np.concatenate(stds)) if all(s is not None for s in stds)
                            else None)  # windows carry `action_std` only when every source has it
        self._lang_table = np.stack(
            [_instruction_embedding(m.get("instruction")) for m in self.metadata]
        ).astype(np.float32)

        lengths = np.concatenate([p.lengths for p in parts])
        ep_dataset = np.concatenate([np.full(len(p.lengths), d, np.int64) for d, p in enumerate(parts)])
        obs_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
        act_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.episode_lengths = lengths
        self.episode_dataset = ep_dataset

        # Current step t of each sample: t in [0, min(T-1, T-Tp+pad_after+To-1)] (Diffusion Policy's start range).
        last_t = np.minimum(lengths - 1, lengths - Tp + pad_after + To - 1)
        n_per_ep = np.maximum(last_t + 1, 0)
        sample_ep = np.repeat(np.arange(len(lengths), dtype=np.int64), n_per_ep)
        first_of_ep = np.concatenate([[0], np.cumsum(n_per_ep)[:-1]]).astype(np.int64)
        t = np.arange(len(sample_ep), dtype=np.int64) - np.repeat(first_of_ep, n_per_ep)
        T = lengths[sample_ep]

        # Index tables: global row indices into the contiguous arrays, so a batch is one gather per key.
        self._sample_t = t
        self._sample_dataset = ep_dataset[sample_ep]
        self._obs_cur = obs_starts[sample_ep] + t
        self._obs_first = obs_starts[sample_ep]
        self._act_cur = act_starts[sample_ep] + t
        self._act_first = act_starts[sample_ep]
        self._act_last = act_starts[sample_ep] + T - 1
        self._goal = obs_starts[sample_ep] + T
        self._future = obs_starts[sample_ep] + np.minimum(t + self.future_steps, T)
        self._obs_offsets = np.arange(-To + 1, 1, dtype=np.int64)
        self._act_offsets = np.arange(-To + 1, -To + 1 + Tp, dtype=np.int64)

    # -- access ---------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sample_t)

    @property
    def obs_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape[1:]) for k, v in self._obs.items()}

    @property
    def action_dim(self) -> int:
        return int(self._actions.shape[1])

    def gather(self, indices) -> dict[str, Any]:
        """A batch as NumPy arrays for sample `indices` (vectorised; no per-sample Python work)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"sample index out of range [0, {len(self)})")
        obs_rows = np.maximum(self._obs_cur[idx, None] + self._obs_offsets, self._obs_first[idx, None])
        act_rows = np.clip(self._act_cur[idx, None] + self._act_offsets, self._act_first[idx, None], self._act_last[idx, None])
        state = self._obs[self.state_key]
        batch = {
            "obs": {k: v[obs_rows] for k, v in self._obs.items()},
            "action": self._actions[act_rows],
            "goal": state[self._goal[idx]],
            "future_state": state[self._future[idx]],
            "lang": self._lang_table[self._sample_dataset[idx]],
            "dataset_index": self._sample_dataset[idx].copy(),
        }
        if self._action_std is not None:
            batch["action_std"] = self._action_std[act_rows]
        return batch

    def __getitems__(self, indices) -> dict[str, Any]:
        """A collated batch of torch tensors: DataLoader calls this with a whole batch of indices."""
        return _to_torch(self.gather(indices))

    def __getitem__(self, index: int) -> dict[str, Any]:
        batch = self.gather([int(index)])
        return _to_torch(_first(batch))

    # -- statistics, checks, loading -------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Normaliser statistics over all the datasets (every observation key and `action`)."""
        return _merge(self._stats_parts)

    def check_env(self, observation_space, action_space, env_id: str = "the env") -> None:
        """DatasetError naming the key and shapes when the datasets do not match an env's spaces."""
        check_spaces(
            self.obs_shapes,
            self.action_dim,
            _space_shapes(observation_space),
            int(np.prod(action_space.shape)),
            what=f"env {env_id!r}",
            name=f"dataset {self.dataset_ids[0]!r}",
            require_all_keys=True,
        )

    def check_policy(self, obs_spec: Mapping[str, tuple], action_dim: int, name: str = "the policy") -> None:
        """DatasetError naming the key and shapes when the datasets lack what a policy expects."""
        per_step = {k: tuple(v)[-1:] if len(tuple(v)) > 1 else tuple(v) for k, v in obs_spec.items()}
        check_spaces(self.obs_shapes, self.action_dim, per_step, action_dim, what=name, name=f"dataset {self.dataset_ids[0]!r}")

    def sampler(self, batch_size: int, num_batches: int | None = None, seed: int = 0) -> StepBatchSampler:
        """The trainer's batch sampler (a pure function of seed and step) over `num_batches` batches (default: one
        epoch)."""
        if batch_size < 1:
            raise DatasetError(f"batch_size must be >= 1, got {batch_size}")
        n = int(num_batches) if num_batches is not None else max(1, len(self) // int(batch_size))
        return StepBatchSampler(len(self), batch_size, 0, n, seed, weights=self.weights if self.mixed else None,
                                samples_per_dataset=self.samples_per_dataset)

    def loader(
        self,
        batch_size: int,
        num_batches: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> DataLoader:
        """A DataLoader whose batches are gathered in one call (`__getitems__`) and already collated."""
        return DataLoader(
            self,
            batch_sampler=self.sampler(batch_size, num_batches=num_batches, seed=seed),
            collate_fn=_passthrough,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
        )


def _to_torch(batch: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ({kk: torch.from_numpy(vv) for kk, vv in v.items()} if isinstance(v, dict) else torch.from_numpy(v))
        for k, v in batch.items()
    }


def _first(batch: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ({kk: np.asarray(vv[0]) for kk, vv in v.items()} if isinstance(v, dict) else np.asarray(v[0]))
        for k, v in batch.items()
    }


def _passthrough(batch):
    return batch


def describe(dataset_id: str) -> dict[str, Any]:
    """A dataset's size and alloy metadata (for logs and reports)."""
    ds = open_dataset(dataset_id)
    return {
        "dataset_id": dataset_id,
        "episodes": int(ds.total_episodes),
        "steps": int(ds.total_steps),
        "path": str(dataset_dir(dataset_id)),
        **alloy_metadata(dataset_id),
    }

