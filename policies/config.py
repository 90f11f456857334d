"""The schema of a policy: the three independent choices (denoiser, process, scheme) plus the data it sees.

The dataclasses double as the Hydra schema of the `policy`, `diffusion` and `scheme` config groups, and a
`PolicySpec` (the choices plus observation/action dims) is what a saved policy's `config.yaml` holds. Their
defaults are the only ones: `configs/train.yaml` composes them under each group (alloy.config registers them with
Hydra), and each option's file holds only what makes it that choice. The diffusion process names are the keys of
`policies.diffusion.PROCESSES` (build_process rejects any other).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from policies.config_fields import choice, num
from policies.errors import PolicyError

NETS = ("dit", "mdt", "mode", "mlp")
FORMAT = "alloy-policy"
FORMAT_VERSION = 1


@dataclass
class NetConfig:
    """Denoiser choice and size; fields that a given net does not use are ignored by it."""

    name: str = "dit"  # dit | mdt | mode | mlp
    obs_horizon: int = num(2, lo=1)  # To: observation steps the policy sees
    pred_horizon: int = num(16, lo=1)  # Tp: actions predicted per chunk
    normalizer: str = choice("limits", ("limits", "gaussian"))  # per-dimension [min, max] or mean/std
    obs_keys: list[str] = field(default_factory=list)  # empty: every observation key of the dataset
    language: bool = True  # condition on the instruction embedding when the obs has `lang_key`
    lang_key: str = "task"  # one-hot obs key that indexes the policy's language table
    d_model: int = num(256, lo=1)
    n_heads: int = num(4, lo=1)
    n_layers: int = num(6, lo=1)  # DiT/MoDE blocks, MDT decoder blocks
    n_enc_layers: int = num(2, lo=1)  # MDT goal/obs encoder blocks
    ffn_mult: int = num(4, lo=1)
    dropout: float = num(0.0, lo=0, hi=1, hi_open=True)  # a probability
    # MoDE
    num_experts: int = num(4, lo=1)
    top_k: int = num(2, lo=1)  # experts per token, at most num_experts
    balance_weight: float = num(0.01, lo=0)
    # observation keys the MoDE router also sees, besides the noise level (e.g. [embodiment]: experts chosen per
    # robot); empty: the level alone. They must be among the observation keys; the router never sees the others.
    route_keys: list[str] = field(default_factory=list)
    # MDT
    foresight_weight: float = num(0.1, lo=0)
    contrastive_weight: float = num(0.1, lo=0)
    contrastive_temperature: float = num(0.1, lo=0, lo_open=True)
    state_goal_prob: float = num(0.5, lo=0, hi=1)  # share of samples conditioned on the goal state, not language
    # MLP
    mlp_hidden: int = num(512, lo=1)
    mlp_layers: int = num(3, lo=1)


@dataclass
class DiffusionConfig:
    """How noise is added in training and removed at inference; `level` units are documented per process."""

    name: str = "ddpm"  # ddpm | ddim | edm | regression
    num_train_steps: int = num(100, lo=1)
    num_inference_steps: int = num(100, lo=1)
    prediction: str = "epsilon"  # epsilon | sample (ddpm/ddim)
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    clip_sample_range: float = num(1.0, lo=0, lo_open=True)
    sigma_data: float = num(0.5, lo=0, lo_open=True)
    sigma_min: float = num(0.001, lo=0, lo_open=True)
    sigma_max: float = num(80.0, lo=0, lo_open=True)
    sigma_loc: float = num(-0.6931471805599453)  # log(0.5): log-logistic training sigmas
    sigma_scale: float = num(0.5, lo=0, lo_open=True)
    sampler: str = "euler"  # euler (= ddim = dpm_solver_1) | dpm_solver_2
    schedule: str = "exponential"  # exponential | karras
    rho: float = num(7.0, lo=0, lo_open=True)


@dataclass
class SchemeConfig:
    """Which actions are denoised per control step."""

    name: str = "chunk"
    action_horizon: int = num(8, lo=1)  # Ta: actions executed from each chunk
    # streaming: a rolling buffer whose noise level rises chunk by chunk along the horizon
    stream_chunks: int = num(0, lo=0)  # noise chunks of Ta actions after the current step; 0: as many as fit in
    #                                    Tp-To+1
    stream_calls: int = num(1, lo=1)  # denoiser calls per replanning; the buffer has stream_chunks * stream_calls
    #                                   levels
    stream_constant_prob: float = num(0.1, lo=0, hi=1)  # share of training samples with one level over the buffer
    # truncated: denoise k-means anchors from a small noise level, execute the best-scoring mode
    num_anchors: int = num(20, lo=1)
    trunc_fraction: float = num(0.05, lo=0, hi=1, lo_open=True)  # noise band as a fraction of the process's
    #                                                              range (t < 0.05 T under DDPM)
    trunc_steps: int = num(2, lo=1)  # denoiser calls per replanning (each over all anchors at once)
    score_weight: float = num(1.0, lo=0)  # weight of the mode classification loss
    train_modes: int = num(0, lo=0)  # anchors denoised per training sample (the positive one + random others);
    #                                  0: all
    # denoised: score every denoised mode (DiffusionDrive); prior: score the anchors from the context alone, then
    # denoise only the chosen one (batch B instead of B*K)
    select: str = choice("denoised", ("denoised", "prior"))


@dataclass
class PolicySpec:
    """Everything needed to rebuild a policy: the three choices plus the data dims. Saved as `config.yaml`."""

    obs_dims: dict[str, int]
    action_dim: int
    net: NetConfig = field(default_factory=NetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    scheme: SchemeConfig = field(default_factory=SchemeConfig)
    lang_dim: int = 0  # 0: no language conditioning

    @property
    def uses_language(self) -> bool:
        return self.lang_dim > 0

    @property
    def feature_keys(self) -> list[str]:
        """Observation keys that feed the observation tokens (the language key feeds the language table instead)."""
        return [k for k in self.obs_dims if not (self.uses_language and k == self.net.lang_key)]

    def validate(self) -> None:
        n = self.net
        if n.name not in NETS:
            raise PolicyError(f"unknown policy net {n.name!r}; use one of {', '.join(NETS)}")
        if not self.obs_dims:
            raise PolicyError("the policy has no observation keys; set policy.obs_keys or use a dataset with observations")
        for key, dim in self.obs_dims.items():
            if not key.isidentifier() or int(dim) < 1:
                raise PolicyError(f"bad observation key {key!r} with dim {dim}; keys must be identifiers with dim >= 1")
        if self.action_dim < 1:
            raise PolicyError(f"action_dim must be >= 1, got {self.action_dim}")
        if n.obs_horizon < 1 or n.pred_horizon < 1:
            raise PolicyError(f"obs_horizon and pred_horizon must be >= 1, got {n.obs_horizon} and {n.pred_horizon}")
        if n.d_model % n.n_heads:
            raise PolicyError(f"d_model {n.d_model} is not divisible by n_heads {n.n_heads}; change one of them")
        if not 1 <= n.top_k <= n.num_experts:
            raise PolicyError(f"top_k must be in [1, num_experts={n.num_experts}], got {n.top_k}")
        if self.uses_language and n.lang_key not in self.obs_dims:
            raise PolicyError(f"language conditioning needs the one-hot obs key {n.lang_key!r}; set policy.language=false")
        if not self.feature_keys:
            raise PolicyError("no observation keys are left for the observation tokens; add policy.obs_keys")
        if n.route_keys and n.name != "mode":
            raise PolicyError(f"policy.route_keys={list(n.route_keys)} routes MoDE's experts; the {n.name} net has "
                              f"no router: use policy=mode or leave route_keys empty")
        missing = [k for k in n.route_keys if k not in self.feature_keys]
        if missing:
            raise PolicyError(f"route key(s) {missing} are not observation keys of the policy "
                              f"({', '.join(self.feature_keys)}); add them to policy.obs_keys")
        at = sorted(self.feature_keys.index(k) for k in set(n.route_keys))
        if at and at != list(range(at[0], at[0] + len(at))):
            raise PolicyError(f"route keys {list(n.route_keys)} must be neighbours in the observation keys "
                              f"({', '.join(self.feature_keys)}), so that the router sees nothing else")

    @property
    def route_slice(self) -> tuple[int, int]:
        """Where the route keys sit in the per-step feature vector (contiguous: the keys in feature order)."""
        if not self.net.route_keys:
            return (0, 0)
        starts, offset = {}, 0
        for k in self.feature_keys:
            starts[k], offset = offset, offset + int(self.obs_dims[k])
        first = min(starts[k] for k in self.net.route_keys)
        last = max(starts[k] + int(self.obs_dims[k]) for k in self.net.route_keys)
        return (first, last)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicySpec:
        try:
            return cls(
                obs_dims={str(k): int(v) for k, v in dict(data["obs_dims"]).items()},
                action_dim=int(data["action_dim"]),
                net=_build(NetConfig, data.get("net", {})),
                diffusion=_build(DiffusionConfig, data.get("diffusion", {})),
                scheme=_build(SchemeConfig, data.get("scheme", {})),
                lang_dim=int(data.get("lang_dim", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PolicyError(f"policy config is incomplete or malformed ({type(e).__name__}: {e}); "
                              f"the checkpoint is corrupt or from another tool") from None


def _build(cls, data: Any):
    """A dataclass from a mapping; an unknown key is an error (a config from another version or tool)."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {', '.join(unknown)}")
    return cls(**data)
