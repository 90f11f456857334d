"""Residual RL: one specialist for one robot, learned by stable-baselines3 on top of a frozen imitation base.

    <run_dir>/
        checkpoints/{last,best}/   specialist directories (config.yaml, model.safetensors, base/) + train_state.*
        evals/step_<N>.json        every periodic evaluation's full report
        rl_log.csv, tb/            SB3's scalars (rollout/, train/, time/) and the evaluations (eval/), by env step
        rl.json, learning_curve.png

Periodic evaluations run the current specialist through the rollout engine on the same seeded episodes every time
(seeds from `seed + 1e6`, so the figure `alloy eval` reports afterwards, seeded from `seed`, is not the one the best
checkpoint was picked on). `resume=true` continues from `checkpoints/last` at its env step with its weights,
optimiser moments, entropy coefficient, SAC replay buffer, RNG states and episode counter (new episodes, not a
replay of the interrupted ones).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger

from policies.atomic import atomic_dir, atomic_write_json, recover_dir, write_safetensors
from policies.residual import ResidualPolicy
from training import checkpoint as ckpt
from training.errors import TrainingError
from training.rl.algos import (
    actor_spec,
    build_model,
    extract_actor,
    load_model_state,
    model_state,
    set_actor_trainable,
)
from training.rl.config import ALGOS, NO_BASE, NetArch, PPOConfig, ResidualConfig, RLConfig, SACConfig
from training.rl.frozen_base import GroupBase, load_base, load_frozen
from training.rl.vec_env import ResidualVecEnv, no_privileged_info
from training.run_logs import RunLogs

log = logging.getLogger("alloy.rl")

STATE_TENSORS, STATE_JSON = "train_state.safetensors", "train_state.json"
STATE_FORMAT = "alloy-rl-state"
EVAL_SEED_OFFSET = 1_000_000


def env_kwargs_of(cfg: RLConfig) -> dict[str, Any]:
    """The training envs' kwargs: `env_kwargs`, the randomisation ranges, the reward weights, privileged info."""
    kwargs = dict(cfg.env_kwargs)
    if cfg.randomize:
        kwargs["randomize"] = {k: list(v) for k, v in cfg.randomize.items()}
    kwargs.update({f"reward_{k}": float(v) for k, v in cfg.reward.items()})
    if cfg.critic_privileged:
        kwargs["privileged_info"] = True  # the env reports info['privileged'] (only asked for: it costs time)
    return kwargs


def obs_layout(observation_space, keys: list[str]) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Dims of the residual's observation keys and their divisors (the space's largest |bound| per dimension)."""
    spaces = getattr(observation_space, "spaces", None)
    if not isinstance(spaces, dict):
        raise TrainingError("residual RL needs a Dict observation space (alloy's envs have one)")
    keys = list(keys) or list(spaces)
    unknown = [k for k in keys if k not in spaces]
    if unknown:
        raise TrainingError(f"residual.obs_keys {unknown} are not observation keys of the env; it has "
                            f"{', '.join(spaces)}")
    dims, scales = {}, {}
    for k in keys:
        box = spaces[k]
        bound = np.maximum(np.abs(np.asarray(box.low, np.float64)), np.abs(np.asarray(box.high, np.float64)))
        bound = np.where(np.isfinite(bound) & (bound > 0), bound, 1.0).reshape(-1)
        dims[k], scales[k] = int(bound.shape[0]), bound.astype(np.float32)
    return dims, scales


def _rms_tensors(vecnorm) -> dict[str, torch.Tensor]:
    """VecNormalize's running statistics as tensors (its own `save` pickles)."""
    out = {}
    for name, rms in (("obs", vecnorm.obs_rms), ("ret", vecnorm.ret_rms)):
        out[f"vecnorm.{name}.mean"] = torch.as_tensor(np.asarray(rms.mean, dtype=np.float64))
        out[f"vecnorm.{name}.var"] = torch.as_tensor(np.asarray(rms.var, dtype=np.float64))
        out[f"vecnorm.{name}.count"] = torch.tensor(float(rms.count), dtype=torch.float64)
    out["vecnorm.returns"] = torch.as_tensor(np.asarray(vecnorm.returns, dtype=np.float64))
    return out


def _load_rms(vecnorm, tensors: dict[str, torch.Tensor]) -> None:
    for name, rms in (("obs", vecnorm.obs_rms), ("ret", vecnorm.ret_rms)):
        rms.mean = tensors[f"vecnorm.{name}.mean"].numpy().copy()
        rms.var = tensors[f"vecnorm.{name}.var"].numpy().copy()
        rms.count = float(tensors[f"vecnorm.{name}.count"])
    vecnorm.returns = tensors["vecnorm.returns"].numpy().copy()


class _LogsWriter(KVWriter):
    """SB3's logger output into the run's CSV + TensorBoard logs (`RunLogs`), keyed by env step."""

    def __init__(self, logs: RunLogs):
        self.logs = logs

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        row: dict[str, Any] = {"step": int(step)}
        for k, v in key_values.items():
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
                row[k] = float(v)
        self.logs.write(row)

    def close(self) -> None:
        self.logs.close()


class ResidualRL:
    """One `alloy rl` run: builds the env, the model and the callback, trains, evaluates, checkpoints."""

    def __init__(self, cfg: RLConfig, run_dir: str | Path, resume: bool = False, config: dict | None = None):
        from envs import make_env

        if cfg.algo not in ALGOS:
            raise TrainingError(f"unknown algorithm {cfg.algo!r}; choose one of: {', '.join(ALGOS)}")
        self.cfg, self.run_dir, self.config = cfg, Path(run_dir), config or {}
        self.ckpt_dir = self.run_dir / "checkpoints"
        from training.runtime import resolve_device

        self.device = str(resolve_device(cfg.device))
        self.env_kwargs = env_kwargs_of(cfg)
        try:
            probe = make_env(cfg.env, **self.env_kwargs)
        except TypeError as e:
            if cfg.critic_privileged and "privileged_info" in str(e):
                raise no_privileged_info(cfg.env) from None
            raise
        try:
            self.observation_space, self.action_space = probe.observation_space, probe.action_space
            self.embodiment = str(getattr(probe.unwrapped, "embodiment", ""))
            self.privileged = 0  # simulator-only values the critic sees (critic_privileged)
            if cfg.critic_privileged:
                _, info = probe.reset(seed=cfg.seed)
                if "privileged" not in info:
                    raise no_privileged_info(cfg.env)
                self.privileged = int(np.asarray(info["privileged"]).size)
        finally:
            probe.close()
        da = int(np.prod(self.action_space.shape))
        self.base, self.base_path, self.base_hash = load_base(cfg.base, self.device, da)
        from training.evaluation import check_policy_matches_env

        check_policy_matches_env(self.base, self.observation_space, self.action_space, cfg.env)
        self.obs_dims, self.obs_scale = obs_layout(self.observation_space, cfg.residual.obs_keys)
        self.spec = actor_spec(cfg.algo, cfg.net, self.obs_dims, self.action_space.low, self.action_space.high,
                               cfg.residual.scale, self.embodiment, normalize=cfg.normalize, sde=cfg.ppo.use_sde)
        self.vecnorm = None  # SB3's VecNormalize around the env when cfg.normalize
        self.state_meta: dict[str, Any] = {}
        self.state_tensors: dict[str, torch.Tensor] = {}
        if resume:
            self._read_resume_state()
        self.history: list[dict] = list(self.state_meta.get("history", []))
        self.best: dict[str, Any] = dict(self.state_meta.get("best") or {})
        self.elapsed = float(self.state_meta.get("elapsed_s", 0.0))

    # ------------------------------------------------------------------ resume
    def _identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        identity = {"algo": self.cfg.algo, "env": self.cfg.env, "base_sha256": self.base_hash,
                    "residual": self.spec.to_dict()}
        if self.privileged:
            identity["critic_privileged"] = self.privileged
        return identity

    def _read_resume_state(self) -> None:
        last = recover_dir(self.ckpt_dir / "last")
        if not (last / STATE_JSON).is_file():
            log.info("resume=true but %s holds no RL checkpoint yet: starting a new run", self.ckpt_dir)
            return
        try:
            meta = json.loads((last / STATE_JSON).read_text())
            from safetensors.torch import load_file

            tensors = load_file(str(last / STATE_TENSORS))
        except (OSError, ValueError) as e:
            raise TrainingError(f"cannot read the RL state in {last} ({type(e).__name__}: {e}); the checkpoint is "
                                f"corrupt: start a new run in another directory") from None
        if meta.get("format") != STATE_FORMAT:
            raise TrainingError(f"{last} is not an alloy RL checkpoint (format {meta.get('format')!r})")
        if meta.get("identity") != self._identity():
            raise TrainingError(f"the run in {self.run_dir} was trained with other settings (algo, env, base or residual "
                                f"network); resume with the same ones or start a new run in another directory")
        self.state_meta, self.state_tensors = meta, tensors
        log.info("resuming from %s at env step %d", last, int(meta["model"]["num_timesteps"]))

    # ------------------------------------------------------------------ pieces
    def base_in_workers(self) -> bool:
        """Whether the base acts in every env group's own process (`base_in_workers`): on the CPU, for a real base."""
        return bool(self.cfg.base_in_workers) and self.cfg.base != NO_BASE and self.device == "cpu"

    def make_vec(self, with_base: bool | None = None):
        """The training envs; with the base acting in each group's process when `with_base` (None: `base_in_workers`)."""
        from gymnasium.vector import AutoresetMode

        from envs.vector import make_vec_env
        from training.evaluation.guard import RolloutGuard

        if with_base is None:
            with_base = self.base_in_workers()
        group_policy = (GroupBase(self.cfg.base, self.device, self.spec.action_dim, self.cfg.seed) if with_base
                        else None)
        guard = functools.partial(RolloutGuard, keep_info=False)
        return make_vec_env(self.cfg.env, self.cfg.num_envs, self.cfg.seed, self.cfg.num_envs > 1, wrappers=(guard,),
                            autoreset_mode=AutoresetMode.DISABLED, workers=self.cfg.workers, group_policy=group_policy,
                            **self.env_kwargs)

    def specialist(self, model, base=None) -> ResidualPolicy:
        """The current specialist (a copy of the actor; `base` defaults to a fresh copy of the frozen base)."""
        actor = extract_actor(model, self.spec, self.obs_scale,
                              self.vecnorm.obs_rms if self.vecnorm is not None else None)
        if base is None:
            base = self._fresh_base()
        return ResidualPolicy(base, actor, base_path=self.base_path, base_hash=self.base_hash)

    def _fresh_base(self):
        return load_frozen(self.cfg.base, self.device, self.spec.action_dim)

    def evaluate(self, policy, episodes: int, seed: int, run_dir: Path | None = None, video: bool = False) -> dict:
        from training.evaluation import evaluate

        kwargs = dict(self.cfg.eval_env_kwargs)
        return evaluate(policy, [self.cfg.env], episodes=episodes, num_envs=self.cfg.eval_num_envs, seed=seed,
                        env_kwargs=kwargs, progress=False, run_dir=run_dir, video=video,
                        policy_name=f"residual {self.cfg.algo} on {self.cfg.base}")

    def save(self, which: str, model, venv: ResidualVecEnv) -> Path:
        tensors, meta = model_state(model)
        rng_t, rng_m = ckpt.rng_state()
        tensors.update(rng_t)
        if self.vecnorm is not None:
            tensors.update(_rms_tensors(self.vecnorm))
        state = {"format": STATE_FORMAT, "identity": self._identity(), "model": meta, "rng": rng_m,
                 "next_episode": int(venv.next_episode), "history": self.history[-1000:], "best": self.best,
                 "elapsed_s": self.elapsed}
        policy = self.specialist(model, base=self.base)
        path = self.ckpt_dir / which
        with atomic_dir(path) as tmp:
            policy.write_files(tmp, extra={"train": self.config} if self.config else None)
            write_safetensors(tmp / STATE_TENSORS, tensors, metadata={"format": STATE_FORMAT})
            (tmp / STATE_JSON).write_bytes(json.dumps(state, indent=1, default=float).encode("utf-8"))
            (tmp / "metrics.json").write_bytes(json.dumps(self.metrics(model), indent=2, default=float).encode())
        return path

    def metrics(self, model) -> dict[str, Any]:
        steps = int(model.num_timesteps)
        return {"env_steps": steps, "total_steps": self.cfg.total_steps, "train_wall_s": self.elapsed,
                "env_steps_per_s": steps / self.elapsed if self.elapsed > 0 else None, "best": self.best,
                "evals": [h for h in self.history if "success_rate" in h]}

    # ------------------------------------------------------------------ run
    def fit(self) -> dict[str, Any]:
        from envs.vector import vector_layout
        from training.rollout.engine import policy_threads

        cfg = self.cfg
        start = int(self.state_meta.get("model", {}).get("num_timesteps", 0))
        layout = vector_layout(cfg.num_envs, cfg.num_envs > 1, cfg.workers)
        with policy_threads(layout["worker_processes"]):
            venv = ResidualVecEnv(self.make_vec, self.base, self.obs_dims,
                                  np.concatenate([self.obs_scale[k] for k in self.obs_dims]), cfg.residual.scale,
                                  cfg.seed, first_episode=int(self.state_meta.get("next_episode", 0)),
                                  explore_ramp=cfg.explore_ramp_steps, privileged=self.privileged)
            venv.global_step = start
            learn_env = venv
            if cfg.normalize:
                from stable_baselines3.common.vec_env import VecNormalize

                gamma = cfg.ppo.gamma if cfg.algo == "ppo" else cfg.sac.gamma
                learn_env = self.vecnorm = VecNormalize(venv, norm_obs=True, norm_reward=True,
                                                        clip_obs=self.spec.clip_obs, gamma=gamma)
            try:
                model = build_model(cfg.algo, learn_env, cfg.net, cfg.ppo, cfg.sac, cfg.seed, self.device,
                                    privileged=self.privileged)
                if self.state_meta:
                    load_model_state(model, self.state_tensors, self.state_meta["model"])
                    ckpt.set_rng_state(self.state_tensors, self.state_meta["rng"])
                    if self.vecnorm is not None:
                        _load_rms(self.vecnorm, self.state_tensors)
                logs = RunLogs(self.run_dir, start, csv_name="rl_log.csv", prefix="rl")
                model.set_logger(Logger(str(self.run_dir), [_LogsWriter(logs)]))
                callback = _RLCallback(self, venv, logs)
                remaining = cfg.total_steps - start
                if remaining > 0:
                    model.learn(total_timesteps=remaining, callback=callback, reset_num_timesteps=not self.state_meta,
                                log_interval=1 if cfg.algo == "ppo" else 8, progress_bar=False)
                else:
                    log.info("the run is already at env step %d of %d; nothing to train", start, cfg.total_steps)
                callback.finish(model)
            finally:
                venv.close()
        return self.metrics(model)


class _RLCallback(BaseCallback):
    """Progress bar, critic warm-up, progressive exploration clock, periodic evaluation and checkpoints."""

    def __init__(self, run: ResidualRL, venv: ResidualVecEnv, logs: RunLogs):
        super().__init__()
        self.run, self.venv, self.logs = run, venv, logs
        self.bar = None
        self.last_eval = self.last_ckpt = None
        self.actor_frozen: bool | None = None
        self.t0 = time.perf_counter()

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        cfg = self.run.cfg
        n = int(self.model.num_timesteps)
        self.last_eval = n - n % cfg.eval_every if cfg.eval_every else n
        self.last_ckpt = n - n % cfg.ckpt_every if cfg.ckpt_every else n
        self.bar = tqdm(total=cfg.total_steps, initial=n, desc=f"rl {cfg.algo}", unit="step", dynamic_ncols=True,
                        disable=not cfg.progress)
        self.t0 = time.perf_counter()
        self._warmup()

    def _warmup(self) -> None:
        frozen = self.model.num_timesteps < self.run.cfg.critic_warmup_steps
        if frozen != self.actor_frozen:
            set_actor_trainable(self.model, not frozen)
            if frozen:
                log.info("critic warm-up: the actor stays frozen for the first %d env steps",
                         self.run.cfg.critic_warmup_steps)
            elif self.actor_frozen:
                log.info("critic warm-up done at env step %d: the actor learns", self.model.num_timesteps)
            self.actor_frozen = frozen

    def _on_step(self) -> bool:
        cfg = self.run.cfg
        n = int(self.model.num_timesteps)
        self.venv.global_step = n
        if self.bar is not None:
            self.bar.update(n - self.bar.n)
        self._warmup()
        if cfg.eval_every and n - self.last_eval >= cfg.eval_every:
            self.last_eval = n - n % cfg.eval_every
            self._evaluate()
        if cfg.ckpt_every and n - self.last_ckpt >= cfg.ckpt_every:
            self.last_ckpt = n - n % cfg.ckpt_every
            self._tick()
            self.run.save("last", self.model, self.venv)
        return True

    def _tick(self) -> None:
        now = time.perf_counter()
        self.run.elapsed += now - self.t0
        self.t0 = now

    def _evaluate(self) -> dict:
        self._tick()
        run, cfg, n = self.run, self.run.cfg, int(self.model.num_timesteps)
        report = run.evaluate(run.specialist(self.model), cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET)
        overall = report["overall"]
        entry = {"step": n, "success_rate": overall["success_rate"], "ci_low": overall["success_ci"][0],
                 "ci_high": overall["success_ci"][1], "episodes": overall["episodes"],
                 "mean_return": overall.get("mean_return"), "wall_s": run.elapsed}
        run.history.append(entry)
        out = run.run_dir / "evals" / f"step_{n:08d}.json"
        atomic_write_json(out, {"step": n, **report})
        self.logs.write({"step": n, "eval/success_rate": entry["success_rate"]})
        if self.bar is not None:
            self.bar.set_postfix(success=f"{entry['success_rate']:.2f}")
        log.info("env step %d: success %.3f [%.3f, %.3f] over %d episodes", n, entry["success_rate"],
                 entry["ci_low"], entry["ci_high"], entry["episodes"])
        if entry["success_rate"] > run.best.get("success_rate", -1.0):
            run.best = dict(entry)
            run.save("best", self.model, self.venv)
        self.t0 = time.perf_counter()  # evaluation time is not training time
        return entry

    def finish(self, model) -> None:
        self.model = model
        if self.bar is not None:
            self.bar.close()
        n = int(model.num_timesteps)
        if not self.run.history or self.run.history[-1]["step"] != n:
            self._evaluate()
        self._tick()
        self.run.save("last", model, self.venv)
        self.logs.close()


def rl_config_from(node: Any) -> RLConfig:
    """An `RLConfig` from the command's composed config (a plain mapping)."""
    data = dict(node)
    nested = {"residual": ResidualConfig, "net": NetArch, "ppo": PPOConfig, "sac": SACConfig}
    names = {f.name for f in dataclasses.fields(RLConfig)}
    kwargs = {k: v for k, v in data.items() if k in names}
    for key, cls in nested.items():
        if key in kwargs:
            kwargs[key] = cls(**dict(kwargs[key]))
    return RLConfig(**kwargs)


def learning_curve_plot(histories: dict[str, list[dict]], out: Path, title: str) -> Path | None:
    """Success vs env steps, one line per run (with the evaluations' 95% intervals as bands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, hist in histories.items():
        pts = [h for h in hist if h.get("success_rate") is not None]
        if not pts:
            continue
        x = [h["step"] for h in pts]
        ax.plot(x, [h["success_rate"] for h in pts], marker="o", ms=3, label=label)
        if all("ci_low" in h for h in pts):
            ax.fill_between(x, [h["ci_low"] for h in pts], [h["ci_high"] for h in pts], alpha=0.15)
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(histories) > 1:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


__all__ = ["RLConfig", "ResidualConfig", "ResidualRL", "learning_curve_plot", "rl_config_from"]
