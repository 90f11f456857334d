"""Imitation-learning trainer: AdamW + warmup/cosine, EMA, gradient clipping, bf16 autocast on CUDA, optional
`torch.compile`, DDP, periodic rollout evaluation with best-checkpoint selection, TensorBoard/CSV logs.

Exact resumption: the batch at step k is a function of (seed, k) (`training.batches`), the diffusion noise of a
sample is a function of (seed, k, its position in the global batch) (`policies.random_source`), the learning rate is
a function of k, and the checkpoint holds the raw weights, optimizer moments, EMA weights and counter and every RNG
state. A run killed at any point and resumed from `checkpoints/last` therefore ends with the same weights as one
that was never interrupted (bit-identical on CPU).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from policies import Policy
from policies.config_fields import num, seq
from policies.random_source import RandomSource
from training import checkpoint as ckpt
from training.batches import StepBatchSampler
from training.distributed import all_true, barrier, init_from_env
from training.ema import EMA
from training.errors import TrainingError
from training.lr import lr_at
from training.objectives import ImitationObjective, Objective, ObjectiveModule
from training.run_logs import RunLogs

log = logging.getLogger("alloy.train")

Evaluator = Callable[[Policy, int], dict]  # (EMA policy, step) -> evaluation report (report["overall"]["success_rate"])


@dataclass
class TrainerConfig:
    """The `trainer` config group."""

    max_steps: int = num(20000, lo=1)
    batch_size: int = num(256, lo=1)  # global, split evenly over data-parallel processes
    lr: float = num(1e-4, lo=0, lo_open=True)  # peak learning rate
    min_lr: float = num(0.0, lo=0)  # the cosine's floor
    weight_decay: float = num(1e-3, lo=0)  # on weight matrices only; biases, norms, embeddings get none
    betas: list[float] = seq(lambda: [0.9, 0.95], length=2, lo=0, hi=1, hi_open=True)  # AdamW's (beta1, beta2)
    warmup_steps: int = num(500, lo=0)  # linear warm-up before the cosine
    grad_clip: float = num(1.0, lo=0, note="0: no clipping")  # max global grad norm
    ema: bool = True
    ema_power: float = num(0.75, lo=0, lo_open=True)
    ema_inv_gamma: float = num(1.0, lo=0, lo_open=True)
    ema_max: float = num(0.9999, lo=0, hi=1)  # decay bounds
    ema_min: float = num(0.0, lo=0, hi=1)
    ema_update_after: int = num(0, lo=0)  # steps before the EMA starts
    ckpt_every: int = num(1000, lo=0, note="0: only at the end")  # steps between checkpoints/last (and at the end)
    log_every: int = num(50, lo=1)
    eval_every: int = num(0, lo=0, note="0: no evaluation")  # steps between rollout evaluations
    eval_episodes: int = num(20, lo=1)  # per env id
    eval_num_envs: int = num(8, lo=1)
    eval_env_ids: list[str] = field(default_factory=list)  # empty: the env ids recorded in the datasets
    num_workers: int = num(0, lo=0)  # data-loading processes
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile the training forward
    progress: bool = True


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "pos" not in name.rsplit(".", 1)[-1] else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch


class Trainer:
    def __init__(self, policy: Policy, dataset, cfg: TrainerConfig, run_dir: str | Path, device: torch.device,
                 seed: int = 0, config: dict | None = None, evaluator: Evaluator | None = None, resume: bool = False,
                 objective: Objective | None = None):
        if cfg.max_steps < 1:
            raise TrainingError(f"trainer.max_steps must be >= 1, got {cfg.max_steps}")
        if cfg.eval_every < 0 or cfg.ckpt_every < 0 or cfg.log_every < 1:
            raise TrainingError("trainer.eval_every and trainer.ckpt_every must be >= 0 and trainer.log_every >= 1")
        self.cfg, self.seed, self.config, self.evaluator = cfg, int(seed), config, evaluator
        self.run_dir = Path(run_dir)
        self.dist, self.device = init_from_env(device)
        self.dataset = dataset
        self.objective = objective if objective is not None else ImitationObjective()
        self.policy = policy.to(self.device).train()
        self.ema = EMA(copy.deepcopy(self.policy).eval(), cfg.ema_power, cfg.ema_inv_gamma, cfg.ema_min,
                       cfg.ema_max, cfg.ema_update_after) if cfg.ema else None
        betas = tuple(cfg.betas)
        if len(betas) != 2:
            raise TrainingError(f"trainer.betas must have two values, got {list(cfg.betas)}")
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(param_groups(self.policy, cfg.weight_decay), lr=cfg.lr, betas=betas,
                                           fused=fused)
        self.step = 0
        self.elapsed = 0.0
        self.samples_seen = 0
        self.best: dict[str, Any] = {}
        self.history: list[dict] = []
        self.ckpt_dir = self.run_dir / "checkpoints"
        if resume:
            self._resume()
        self.train_model: torch.nn.Module = ObjectiveModule(self.policy, self.objective)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.train_model = DDP(self.train_model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                   find_unused_parameters=True)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)

    # ------------------------------------------------------------------ state
    @property
    def ema_policy(self) -> Policy:
        return self.ema.model if self.ema is not None else self.policy

    def _resume(self) -> None:
        last = self.ckpt_dir / "last"
        tensors, meta = ckpt.load_train_state(last)
        from policies.policy import read_checkpoint

        spec, ema_weights = read_checkpoint(last)
        if spec.to_dict() != self.policy.spec.to_dict():
            raise TrainingError(f"the checkpoint in {last} was trained with a different policy config; resume with "
                                f"the same policy/diffusion/scheme/dataset settings or start a new run")
        self.policy.load_state_dict(ckpt.model_weights(tensors))
        if self.ema is not None:
            self.ema.model.load_state_dict(ema_weights)
            self.ema.num_updates = int(meta["ema_updates"])
        ckpt.load_optimizer_state(self.optimizer, tensors, meta["optimizer"])
        if meta.get("objective", self.objective.name) != self.objective.name:
            raise TrainingError(f"the checkpoint in {last} was trained with the {meta['objective']!r} objective, not "
                                f"{self.objective.name!r}; resume with the same command or start a new run")
        self.objective.load_state_tensors({k[len("objective."):]: v for k, v in tensors.items()
                                           if k.startswith("objective.")})
        ckpt.set_rng_state(tensors, meta["rng"])
        self.step, self.elapsed = int(meta["step"]), float(meta["elapsed_s"])
        self.samples_seen = int(meta["samples_seen"])
        self.best, self.history = dict(meta.get("best") or {}), list(meta.get("history") or [])
        log.info("resumed from %s at step %d", last, self.step)

    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "objective": self.objective.name,
                "ema_updates": self.ema.num_updates if self.ema else 0, "elapsed_s": self.elapsed,
                "samples_seen": self.samples_seen, "best": self.best, "history": self.history[-1000:]}

    def metrics(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {"step": self.step, "max_steps": self.cfg.max_steps, "train_wall_s": self.elapsed,
                "samples_per_s": self.samples_seen / self.elapsed if self.elapsed > 0 else None,
                "samples_seen": self.samples_seen, "world_size": self.dist.world_size, "device": str(self.device),
                "last": last, "best": self.best,
                "evals": [h for h in self.history if "success_rate" in h]}

    def save(self, which: str = "last") -> Path | None:
        if not self.dist.is_main:
            return None
        extra = {f"objective.{k}": v for k, v in self.objective.state_tensors().items()}
        return ckpt.save_checkpoint(self.ckpt_dir / which, self.ema_policy, self.policy, self.optimizer,
                                    self._state(), self.metrics(), self.config, extra_tensors=extra,
                                    sections=self.objective.checkpoint_sections())

    # ------------------------------------------------------------------ loop
    def _loader(self, until: int) -> DataLoader:
        ds = self.dataset
        mixed = bool(getattr(ds, "mixed", False))
        sampler = StepBatchSampler(len(ds), self.cfg.batch_size, self.step, until, self.seed,
                                   weights=np.asarray(ds.weights) if mixed else None,
                                   samples_per_dataset=getattr(ds, "samples_per_dataset", None),
                                   rank=self.dist.rank, world_size=self.dist.world_size)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=_passthrough, num_workers=self.cfg.num_workers,
                          pin_memory=self.device.type == "cuda", generator=torch.Generator(),
                          persistent_workers=False)

    def _autocast(self):
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, batch: dict) -> dict[str, float]:
        cfg = self.cfg
        local = cfg.batch_size // self.dist.world_size
        lr = lr_at(self.step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        rs = RandomSource.for_step(self.seed, self.step, local, self.device, cfg.batch_size,
                                   offset=self.dist.rank * local)
        with self._autocast():
            loss, parts = self.train_model(batch, rs)
        if not all_true(bool(torch.isfinite(loss)), self.dist, self.device):
            self._diverged(f"the loss is {float(loss.detach())}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.policy.parameters() if p.grad is not None]
        if cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        if not all_true(bool(torch.isfinite(norm)), self.dist, self.device):
            self._diverged(f"the gradient norm is {float(norm)}")
        self.optimizer.step()
        self.objective.after_step()
        if self.ema is not None:
            self.ema.update(self.policy)
        self.step += 1
        self.samples_seen += cfg.batch_size
        return {"loss": float(loss.detach()), "lr": lr, "grad_norm": float(norm), **{k: float(v) for k, v in parts.items()}}

    def _diverged(self, what: str) -> None:
        last = self.ckpt_dir / "last"
        kept = (f"the last good checkpoint is kept at {last}" if last.exists()
                else "no checkpoint had been written yet")
        raise TrainingError(f"{what} at step {self.step}; training stopped and {kept}. Lower trainer.lr, keep "
                            f"trainer.grad_clip > 0, or check the dataset for NaN/inf values")

    def evaluate(self, logs: RunLogs | None = None) -> dict | None:
        if self.evaluator is None or not self.dist.is_main:
            return None
        policy = self.ema_policy
        was = policy.training
        report = self.evaluator(policy, self.step)
        policy.train(was)
        rate = report["overall"]["success_rate"]
        self._write_eval_report(report)
        entry = {"step": self.step, "success_rate": rate}
        self.history.append(entry)
        if logs is not None and logs.tb is not None and rate is not None:
            logs.tb.add_scalar("eval/success_rate", rate, self.step)
        if rate is not None and rate > self.best.get("success_rate", -1.0):
            self.best = dict(entry)
            self.save("best")
        log.info("step %d: eval success %.3f (best %.3f at step %d)", self.step, rate if rate is not None else float("nan"),
                 self.best.get("success_rate", float("nan")), self.best.get("step", -1))
        return report

    def _write_eval_report(self, report: dict) -> None:
        """evals/step_<N>.json: the full report (per-env success), so a run's weak tasks can be read afterwards."""
        out = self.run_dir / "evals" / f"step_{self.step:07d}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"step": self.step, **report}, indent=2, default=float))
        tmp.replace(out)

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train to step `until` (default `max_steps`; the schedule always spans `max_steps`), checkpointing at
        `ckpt_every` and at the end. A stage that trains in rounds (DAgger) calls it once per round, and the data may
        grow between calls: the batch at step k stays a function of (seed, k) and of the data at that time."""
        cfg = self.cfg
        until = cfg.max_steps if until is None else min(int(until), cfg.max_steps)
        main = self.dist.is_main
        logger = RunLogs(self.run_dir, self.step) if main else None
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (main and cfg.progress))
        window: list[dict] = []
        t0 = time.perf_counter()
        window_start, window_step = t0, self.step
        first = True
        try:
            for batch in (self._loader(until) if self.step < until else ()):
                batch = _to_device(batch, self.device)
                if first:
                    check = getattr(self.objective, "check_batch", None) or self.policy.check_batch
                    check(batch)
                    first = False
                window.append(self.train_step(batch))
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == until:
                    now = time.perf_counter()
                    row = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                    row["lr"] = window[-1]["lr"]
                    row["samples_per_s"] = (self.step - window_step) * cfg.batch_size / max(now - window_start, 1e-9)
                    row["step"] = self.step
                    self.elapsed += now - t0
                    t0 = window_start = now
                    window_step = self.step
                    window = []
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.1e}")
                    if logger is not None:
                        logger.write(row)
                    self.history.append({"step": self.step, "loss": row["loss"]})
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self._sync_elapsed(t0)
                    self.evaluate(logger)
                    t0 = time.perf_counter()
                    barrier(self.dist)
                if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or self.step == until:
                    self._sync_elapsed(t0)
                    t0 = time.perf_counter()
                    self.save("last")
                    barrier(self.dist)
        finally:
            bar.close()
            if logger is not None:
                logger.close()
        if main:
            (self.run_dir / "metrics.json").write_text(json.dumps(self.metrics(), indent=2, default=float))
        return self.metrics()

    def _sync_elapsed(self, t0: float) -> None:
        self.elapsed += time.perf_counter() - t0


def _passthrough(batch):
    return batch


__all__ = ["Trainer", "TrainerConfig", "Evaluator"]
