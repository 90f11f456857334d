"""K-means anchors over the training action chunks, for the truncated-diffusion scheme (DiffusionDrive).

The anchors are fitted once, before training, on normalised action chunks (the space the denoiser works in) and
stored in the truncated scheme's `anchors` buffer, so they travel inside the policy's `model.safetensors` and come
back with `Policy.from_pretrained`. DiffusionDrive never released its clustering script; this is ours:

    from policies.schemes.anchors import fit_policy_anchors
    fit_policy_anchors(policy, dataset)        # any object with len() and gather(indices)["action"] (N, Tp, da)

`alloy train scheme=truncated` calls it through the scheme's `prepare(policy, dataset)` hook.
"""

from __future__ import annotations

import numpy as np
import torch

from policies.errors import PolicyError


def fit_anchors(chunks: np.ndarray, num_anchors: int, seed: int = 0, max_samples: int = 50_000) -> np.ndarray:
    """`num_anchors` k-means centres (K, Tp, da) of action chunks (N, Tp, da), ordered by cluster size (largest first).

    At most `max_samples` chunks (a seeded random subset) are clustered; k-means++ init, 4 restarts.
    """
    from sklearn.cluster import KMeans

    chunks = np.asarray(chunks, dtype=np.float64)
    if chunks.ndim != 3:
        raise PolicyError(f"anchor fitting needs action chunks of shape (N, Tp, da), got {chunks.shape}")
    if not np.isfinite(chunks).all():
        raise PolicyError("the action chunks contain NaN or inf; check the dataset before fitting anchors")
    n = chunks.shape[0]
    if n < num_anchors:
        raise PolicyError(f"{n} action chunks cannot give {num_anchors} anchors; lower scheme.num_anchors or "
                          f"collect more data")
    rng = np.random.default_rng(seed)
    if n > max_samples:
        chunks = chunks[rng.choice(n, size=max_samples, replace=False)]
    flat = chunks.reshape(chunks.shape[0], -1)
    km = KMeans(n_clusters=num_anchors, n_init=4, random_state=int(seed) % 2**31).fit(flat)
    sizes = np.bincount(km.labels_, minlength=num_anchors)
    order = np.argsort(-sizes, kind="stable")
    return km.cluster_centers_[order].reshape(num_anchors, *chunks.shape[1:]).astype(np.float32)


def dataset_action_chunks(dataset, max_samples: int = 50_000, seed: int = 0) -> np.ndarray:
    """Action chunks (N, Tp, da) in env units from a window dataset (a seeded subset when it is larger)."""
    n = len(dataset)
    if n == 0:
        raise PolicyError("the dataset is empty; anchors need demonstrated action chunks")
    idx = np.arange(n) if n <= max_samples else np.sort(np.random.default_rng(seed).choice(n, max_samples, False))
    parts = [np.asarray(dataset.gather(idx[i:i + 4096])["action"], dtype=np.float32) for i in range(0, len(idx), 4096)]
    return np.concatenate(parts, axis=0)


def fit_policy_anchors(policy, dataset, seed: int = 0, max_samples: int = 50_000) -> np.ndarray:
    """Fit the anchors of a policy with the truncated scheme on `dataset` (its normaliser must be fitted)."""
    scheme = policy.scheme
    if not hasattr(scheme, "set_anchors"):
        raise PolicyError(f"the policy uses the {policy.spec.scheme.name!r} scheme, which has no anchors; "
                          f"use scheme=truncated")
    if not bool(policy.normalizer.fitted):
        raise PolicyError("fit the policy's normaliser (policy.normalizer.fit(dataset.stats)) before its anchors")
    chunks = torch.from_numpy(dataset_action_chunks(dataset, max_samples, seed)).to(policy.device)
    with torch.no_grad():
        normed = policy.normalizer.normalize("action", chunks).cpu().numpy()
    if normed.shape[1:] != (policy.pred_horizon, policy.action_dim):
        raise PolicyError(f"dataset chunks have shape {normed.shape[1:]} but the policy predicts "
                          f"({policy.pred_horizon}, {policy.action_dim}); the dataset does not match the policy")
    anchors = fit_anchors(normed, scheme.num_anchors, seed, max_samples)
    scheme.set_anchors(anchors)
    return anchors
