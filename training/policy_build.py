"""Build a policy that fits a dataset: observation dims, language table and normaliser come from the data."""

from __future__ import annotations

import numpy as np

from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig
from training.errors import DatasetError


def spec_for_dataset(dataset, net: NetConfig, diffusion: DiffusionConfig, scheme: SchemeConfig) -> PolicySpec:
    """The policy spec for `dataset`: its obs keys (or `net.obs_keys`), action dim, and language when present."""
    shapes = dataset.obs_shapes
    keys = list(net.obs_keys) or list(shapes)
    missing = [k for k in keys if k not in shapes]
    if missing:
        raise DatasetError(f"policy.obs_keys names '{missing[0]}' but the dataset has only "
                           f"{', '.join(f'{k} {tuple(v)}' for k, v in shapes.items())}; fix policy.obs_keys")
    obs_dims = {k: int(np.prod(shapes[k])) for k in keys}
    lang_dim = 0
    if net.language and net.lang_key in obs_dims and _has_language(dataset):
        lang_dim = int(dataset.gather([0])["lang"].shape[-1])
    return PolicySpec(obs_dims=obs_dims, action_dim=int(dataset.action_dim), net=net, diffusion=diffusion,
                      scheme=scheme, lang_dim=lang_dim)


def _has_language(dataset) -> bool:
    return any(bool(np.any(dataset.gather([i])["lang"])) for i in _first_samples(dataset))


def _first_samples(dataset) -> list[int]:
    counts = np.asarray(getattr(dataset, "samples_per_dataset", [len(dataset)]), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return [int(s) for s, c in zip(starts, counts) if c > 0]


def language_table(dataset, lang_key: str, num_tasks: int) -> np.ndarray:
    """Instruction embedding per task index, read from the first window of each dataset (one task per dataset)."""
    table = np.zeros((num_tasks, 0), dtype=np.float32)
    for i in _first_samples(dataset):
        sample = dataset.gather([i])
        onehot = np.asarray(sample["obs"][lang_key][0, -1])
        lang = np.asarray(sample["lang"][0], dtype=np.float32)
        if table.shape[1] == 0:
            table = np.zeros((num_tasks, lang.shape[0]), dtype=np.float32)
        if onehot.max() <= 0:
            raise DatasetError(f"observation '{lang_key}' of dataset sample {i} is not a one-hot task id; "
                               f"set policy.language=false")
        table[int(onehot.argmax())] = lang
    return table


def build_policy(dataset, net: NetConfig, diffusion: DiffusionConfig, scheme: SchemeConfig) -> Policy:
    spec = spec_for_dataset(dataset, net, diffusion, scheme)
    policy = Policy(spec)
    policy.normalizer.fit(dataset.stats)
    if spec.uses_language:
        policy.set_language_table(language_table(dataset, net.lang_key, spec.obs_dims[net.lang_key]))
    prepare = getattr(policy.scheme, "prepare", None)  # data-fitted scheme parts (truncated's k-means anchors)
    if prepare is not None:
        prepare(policy, dataset)
    return policy
