"""`alloy bench inference`: latency, network calls and success of chunk, streaming, truncated and consistency
sampling with the same denoiser, plus MoDE expert caching on vs off. Writes <run_dir>/inference.json and .md."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from policies.config_fields import choice, num, seq

HELP = "fast action generation benchmark: chunk DDPM/DDIM/EDM vs streaming, truncated, consistency; MoDE caching"

log = logging.getLogger("alloy.bench.inference")

# preset=full is the documented benchmark; preset=quick runs in minutes on a CPU (small net, short training).
PRESETS = {
    "full": dict(demos=100, net="dit", d_model=256, n_layers=6, n_heads=4, train_steps=20000, batch_size=256, lr=3e-4,
                 distill_steps=5000, eval_episodes=50, eval_num_envs=8, latency_window=40, latency_repeats=10,
                 b64_repeats=3, num_anchors=20, train_modes=0, consistency_steps=[1, 3]),
    "quick": dict(demos=20, net="dit", d_model=64, n_layers=2, n_heads=4, train_steps=800, batch_size=64, lr=1e-3,
                  distill_steps=300, eval_episodes=6, eval_num_envs=3, latency_window=40, latency_repeats=3,
                  b64_repeats=2, num_anchors=8, train_modes=4, consistency_steps=[1]),
}


@dataclasses.dataclass
class Sizes:
    """Unset (null) values come from the preset."""

    demos: Optional[int] = num(None, lo=1)  # teacher episodes collected per task when its dataset is missing
    net: Optional[str] = None  # the one denoiser every row uses: dit | mdt | mode | mlp
    d_model: Optional[int] = num(None, lo=1)
    n_layers: Optional[int] = num(None, lo=1)
    n_heads: Optional[int] = num(None, lo=1)
    train_steps: Optional[int] = num(None, lo=1)
    batch_size: Optional[int] = num(None, lo=1)
    lr: Optional[float] = num(None, lo=0, lo_open=True)
    distill_steps: Optional[int] = num(None, lo=1)
    eval_episodes: Optional[int] = num(None, lo=1)
    eval_num_envs: Optional[int] = num(None, lo=1)
    latency_window: Optional[int] = num(None, lo=1)  # executed actions per timed window
    latency_repeats: Optional[int] = num(None, lo=1)
    b64_repeats: Optional[int] = num(None, lo=1)
    num_anchors: Optional[int] = num(None, lo=1)
    train_modes: Optional[int] = num(None, lo=0, note="0: all anchors")
    consistency_steps: Optional[List[int]] = seq(None, lo=1, integer=True)  # student step counts


@dataclasses.dataclass
class Config:
    preset: str = choice("full", ("full", "quick"))
    tasks: List[str] = dataclasses.field(default_factory=lambda: ["alloy/Nav-Holonomic-v0", "metaworld/reach-v3"])
    # per task id: obs_keys, pred_horizon, action_horizon, stream_action_horizon (what the task needs, every row)
    task_settings: Dict[str, Any] = dataclasses.field(default_factory=dict)
    sizes: Sizes = dataclasses.field(default_factory=Sizes)
    obs_horizon: int = num(2, lo=1)
    pred_horizon: int = num(16, lo=1)
    action_horizon: int = num(8, lo=1)  # Ta of the chunk, truncated and consistency rows
    stream_action_horizon: int = num(5, lo=1)  # Ta of the streaming row (3 chunks of 5 fill Tp-To+1 = 15)
    stream_calls: int = num(1, lo=1)  # denoiser calls per streaming replanning
    trunc_steps: int = num(2, lo=1)
    trunc_select: List[str] = dataclasses.field(default_factory=lambda: ["denoised", "prior"])  # a truncated policy each
    trunc_prior_steps: List[int] = seq(lambda: [1, 2], lo=1, integer=True)  # rows of the prior policy
    ddpm_steps: int = num(100, lo=1)
    ddim_steps: int = num(10, lo=1)
    edm_steps: int = num(10, lo=1)
    threads: int = num(1, lo=1)  # torch threads while timing (the CPU is shared; GPU timing ignores it)
    mode_cache: bool = True  # add the cached vs uncached MoDE comparison
    # schemes whose first row is also timed in its deployment forms (torch.compile, ONNX Runtime 1 thread, pt2)
    deploy: List[str] = dataclasses.field(default_factory=lambda: ["chunk", "streaming", "truncated"])
    from_run: Optional[str] = None  # time the policies of an earlier run (same settings) instead of training
    progress: bool = True


def resolve_sizes(cfg: DictConfig) -> dict:
    from distill.errors import DistillError

    if cfg.preset not in PRESETS:
        raise DistillError(f"unknown preset {cfg.preset!r}; use preset=full or preset=quick")
    given = OmegaConf.to_container(cfg.sizes, resolve=True)
    sizes = {k: (given[k] if given.get(k) is not None else v) for k, v in PRESETS[cfg.preset].items()}
    for key in ("demos", "train_steps", "batch_size", "distill_steps", "eval_episodes", "eval_num_envs",
                "latency_window", "latency_repeats", "b64_repeats"):
        if int(sizes[key]) < 1:
            raise DistillError(f"sizes.{key} must be >= 1, got {sizes[key]}")
    if not sizes["consistency_steps"] or min(sizes["consistency_steps"]) < 1:
        raise DistillError(f"sizes.consistency_steps must be a non-empty list of step counts >= 1, "
                           f"got {sizes['consistency_steps']}")
    if not cfg.tasks:
        raise DistillError("tasks is empty; name at least one env id, e.g. tasks=[alloy/Nav-Holonomic-v0]")
    return sizes


def run(cfg: DictConfig) -> None:
    from alloy.benchmarks.inference import BenchSizes, InferenceBench, SchemeSizes, TaskSpec, write_result
    from distill.errors import DistillError
    from envs import list_env_ids
    from policies import NetConfig
    from training.runtime import resolve_device, seed_everything

    sizes = resolve_sizes(cfg)
    bad = [s for s in cfg.trunc_select if s not in ("denoised", "prior")]
    if bad or not cfg.trunc_select:
        raise DistillError(f"trunc_select must list denoised and/or prior, got {list(cfg.trunc_select)}")
    if not cfg.trunc_prior_steps or min(cfg.trunc_prior_steps) < 1 or cfg.trunc_steps < 1:
        raise DistillError("trunc_steps and every trunc_prior_steps entry must be >= 1")
    known = set(list_env_ids())
    settings = OmegaConf.to_container(cfg.task_settings, resolve=True)
    allowed = {"obs_keys", "pred_horizon", "action_horizon", "stream_action_horizon"}
    for task_id, extra in settings.items():
        wrong = sorted(set(extra or {}) - allowed)
        if wrong:
            raise DistillError(f"task_settings.{task_id} has unknown key(s) {', '.join(wrong)}; "
                               f"use {', '.join(sorted(allowed))}")
    unknown = [t for t in cfg.tasks if t not in known]
    if unknown:
        raise DistillError(f"unknown task env id(s) {', '.join(unknown)}; use alloy/Nav-<Robot>-v0 or metaworld/<task>")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    net = NetConfig(name=sizes["net"], d_model=sizes["d_model"], n_layers=sizes["n_layers"], n_heads=sizes["n_heads"],
                    obs_horizon=cfg.obs_horizon, pred_horizon=cfg.pred_horizon)
    bench = InferenceBench(
        [TaskSpec(env=t, episodes=int(sizes["demos"]), **(settings.get(t) or {})) for t in cfg.tasks], net,
        BenchSizes(train_steps=sizes["train_steps"], batch_size=sizes["batch_size"], lr=sizes["lr"],
                   distill_steps=sizes["distill_steps"], eval_episodes=sizes["eval_episodes"],
                   eval_num_envs=sizes["eval_num_envs"], latency_window=sizes["latency_window"],
                   latency_repeats=sizes["latency_repeats"], b64_repeats=sizes["b64_repeats"], threads=cfg.threads),
        SchemeSizes(action_horizon=cfg.action_horizon, stream_action_horizon=cfg.stream_action_horizon,
                    stream_calls=cfg.stream_calls, num_anchors=sizes["num_anchors"], train_modes=sizes["train_modes"],
                    trunc_steps=cfg.trunc_steps, trunc_select=list(cfg.trunc_select),
                    trunc_prior_steps=list(cfg.trunc_prior_steps), ddpm_steps=cfg.ddpm_steps, ddim_steps=cfg.ddim_steps,
                    edm_steps=cfg.edm_steps, consistency_steps=list(sizes["consistency_steps"]),
                    deploy=list(cfg.deploy)),
        cfg.run_dir, device, seed=cfg.seed, mode_cache=cfg.mode_cache, progress=cfg.progress, from_run=cfg.from_run)
    result = bench.run()
    result["config"] = {**OmegaConf.to_container(cfg, resolve=True), "resolved_sizes": sizes}
    js, md = write_result(result, cfg.run_dir, f"Inference benchmark ({cfg.preset} preset)")
    print(md.read_text())
    print(f"written: {js}")
