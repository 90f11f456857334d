"""The fast-action-generation benchmark: every scheme with the same denoiser on the same tasks, in one run.

Per task (a nav robot and a Meta-World task): collect teacher demonstrations (or reuse them), train with the same
denoiser (1) a full-chunk DDPM policy, sampled with DDPM-100 and with DDIM-10 from the same weights, (2) a
full-chunk EDM policy (also the consistency teacher), (3) a streaming policy, (4) a truncated-from-anchors policy,
then distil (2) into a consistency student. Each row gets parameters, denoiser calls per executed action (steady
state), latency of one denoiser call at batch 1, wall time per executed action at batch 1 (median over repeats)
and batch 64, the p99 of single `act` calls at batch 1, and the success rate of evaluation rollouts
(`training.evaluation.evaluate`). A separate section compares MoDE sampling with and without expert caching
(speed-up and the largest action difference for the same noise), for the full chunk and for streaming.

Latency is measured on the policy's device with `torch.set_num_threads(threads)`, after warm-up, on real
observations from the env; act() includes the policy's own work (validation, normalisation, history). All rows
of a task are trained first and then timed round-robin (one window of each row per round, medians over rounds),
so that a machine whose speed drifts over minutes biases their ratios less.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.consistency import ConsistencyConfig, distill_consistency, load_student, save_student, set_student_steps
from distill.errors import DistillError
from policies import DiffusionConfig, NetConfig, Policy, SchemeConfig

log = logging.getLogger("alloy.bench.inference")


@dataclass
class TaskSpec:
    env: str = "alloy/Nav-Holonomic-v0"
    episodes: int = 50  # demonstrations collected when the dataset is missing
    # what the task needs, for every row alike (None / empty: the benchmark-wide value)
    obs_keys: list[str] = field(default_factory=list)
    pred_horizon: int | None = None
    action_horizon: int | None = None  # chunk, truncated and consistency Ta
    stream_action_horizon: int | None = None


@dataclass
class BenchSizes:
    """Everything that decides how long the benchmark runs (the `quick` preset shrinks these)."""

    train_steps: int = 20000
    batch_size: int = 256
    lr: float = 3e-4
    distill_steps: int = 5000
    eval_episodes: int = 50
    eval_num_envs: int = 8
    latency_window: int = 40  # executed actions per timed window (a multiple of every Ta)
    latency_repeats: int = 10
    b64_repeats: int = 3
    threads: int = 1


@dataclass
class SchemeSizes:
    action_horizon: int = 8  # chunk, truncated and consistency Ta
    stream_action_horizon: int = 5
    stream_calls: int = 1
    num_anchors: int = 20
    train_modes: int = 0
    trunc_steps: int = 2
    trunc_select: list[str] = field(default_factory=lambda: ["denoised", "prior"])  # a truncated policy each
    trunc_prior_steps: list[int] = field(default_factory=lambda: [1, 2])  # rows of the prior policy (same weights)
    ddpm_steps: int = 100
    ddim_steps: int = 10
    edm_steps: int = 10
    consistency_steps: list[int] = field(default_factory=lambda: [1, 3])
    # schemes whose first row (chunk: DDIM, truncated: prior selection) is also timed in its deployment forms
    # (torch.compile, the ONNX artifact in onnxruntime with 1 thread, the torch.export programs); empty: none
    deploy: list[str] = field(default_factory=lambda: ["chunk", "streaming", "truncated"])


def _timed(fn, sync) -> float:
    t0 = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - t0) * 1e3


def _sync_fn(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _obs_batch(env_id: str, batch: int, seed: int) -> dict[str, np.ndarray]:
    """A real observation of the env, repeated `batch` times."""
    from envs import make_env

    env = make_env(env_id)
    try:
        obs, _ = env.reset(seed=seed)
    finally:
        env.close()
    return {k: np.repeat(np.asarray(v, np.float32).reshape(1, -1), batch, axis=0) for k, v in obs.items()}


def act_window(policy, obs: dict, window: int, warmup: int) -> tuple[float, list[float]]:
    """ms per executed action over `window` act() calls after a reset and `warmup` calls; and each call's ms."""
    from policies.interface import observation_for

    obs = observation_for(policy, obs)  # the env gives more keys than a policy with policy.obs_keys takes
    sync = _sync_fn(policy.device)
    policy.reset()
    for _ in range(warmup):
        policy.act(obs)
    singles = []
    t0 = time.perf_counter()
    for _ in range(window):
        singles.append(_timed(lambda: policy.act(obs), sync))
    return (time.perf_counter() - t0) * 1e3 / window, singles


def act_latency(policy, obs1: dict, obs64: dict, sizes: BenchSizes, warmup: int) -> dict[str, float]:
    """ms per executed action at batch 1 (median over windows) and batch 64, p99 of single act() at batch 1."""
    out: dict[str, float] = {}
    for name, obs, repeats in (("b1", obs1, sizes.latency_repeats), ("b64", obs64, sizes.b64_repeats)):
        timed = [act_window(policy, obs, sizes.latency_window, warmup) for _ in range(repeats)]
        out[f"ms_per_action_{name}"] = float(np.median([w for w, _ in timed]))
        if name == "b1":
            out["p99_ms_per_action_b1"] = float(np.percentile([t for _, s in timed for t in s], 99))
    return out


def call_latency(policy, obs1: dict, batch: int, level_shape: str, repeats: int = 50) -> float:
    """Median ms of one denoiser call at the given batch (truncated: all anchors), under inference mode and with
    the expert cache engaged, as in act()."""
    from policies.expert_cache import engaged
    from policies.interface import observation_for

    device = policy.device
    sync = _sync_fn(device)
    policy.reset()
    policy.act(observation_for(policy, obs1))  # fills the observation history
    x = torch.randn(batch, policy.pred_horizon, policy.action_dim, device=device)
    level = torch.full((batch, policy.pred_horizon) if level_shape == "position" else (batch,), 0.5, device=device)
    times = []
    with torch.inference_mode(), engaged(policy.expert_cache, policy.net):
        ctx = policy.encode_current().repeat_interleave(batch, dim=0)
        if hasattr(policy.net, "s_embed"):
            policy.net.target = torch.zeros(batch, device=device)
        for i in range(repeats + 5):
            ms = _timed(lambda: policy.net.denoise(x, level, ctx), sync)
            if i >= 5:
                times.append(ms)
        if hasattr(policy.net, "s_embed"):
            policy.net.target = None
    return float(np.median(times))


def n_params(policy) -> int:
    return int(sum(p.numel() for p in policy.parameters()))


def _with_process(policy: Policy, diffusion: DiffusionConfig) -> Policy:
    """The same weights sampled by another process of the same training (DDPM weights under DDIM)."""
    spec = copy.deepcopy(policy.spec)
    spec.diffusion = diffusion
    other = Policy(spec)
    other.load_state_dict(policy.state_dict())
    return other.to(policy.device).eval()


@dataclass
class _Row:
    """One benchmark row before it is measured: the policy, how to put it in the row's setting, and its labels."""

    policy: Any
    scheme: str
    label: str
    steps: int
    calls_per_action: float
    call_batch: int  # rows in one denoiser call at batch 1 (truncated, denoised selection: all anchors)
    level_shape: str  # "sample" or "position" (streaming)
    warmup: int
    setup: Any = lambda: None  # e.g. the sampling step count of a policy shared by several rows
    windows: dict = field(default_factory=lambda: {"b1": [], "b64": []})
    singles: list = field(default_factory=list)
    per_call: float = float("nan")


class InferenceBench:
    def __init__(self, tasks: list[TaskSpec], net: NetConfig, sizes: BenchSizes, schemes: SchemeSizes,
                 run_dir: str | Path, device: torch.device, seed: int = 0, mode_cache: bool = True,
                 progress: bool = True, from_run: str | Path | None = None):
        self.tasks, self.net, self.sizes, self.schemes = tasks, net, sizes, schemes
        # from_run: time the policies an earlier run trained (its success rates are kept) instead of training
        self.from_run = Path(from_run) if from_run else None
        self.earlier: dict[tuple[str, str], dict] = {}
        if self.from_run is not None:
            path = self.from_run / "inference.json"
            if not path.is_file():
                raise DistillError(f"from_run={from_run} holds no inference.json; pass the run directory of an "
                                   f"earlier alloy bench inference")
            self.earlier = {(r["task"], r["policy"]): r for r in json.loads(path.read_text())["rows"]}
        self.run_dir, self.device, self.seed = Path(run_dir), device, int(seed)
        self.mode_cache, self.progress = mode_cache, progress
        horizons = {schemes.action_horizon, schemes.stream_action_horizon}
        for t in tasks:
            horizons |= {h for h in (t.action_horizon, t.stream_action_horizon) if h}
        if sizes.latency_window % math.lcm(*horizons):
            raise DistillError(f"latency_window={sizes.latency_window} must be a multiple of every action horizon "
                               f"({', '.join(map(str, sorted(horizons)))})")

    # -- data and training -----------------------------------------------------------------------------------------
    def dataset_for(self, task: TaskSpec) -> str:
        from training.collect import collect, select_targets
        from training.datasets_io import list_datasets

        suite = "nav" if task.env.startswith("alloy/Nav") else "metaworld_mt50"
        kwargs = {}
        if suite == "nav":
            from envs import nav

            kwargs["embodiment"] = nav.EMBODIMENTS[list(nav.ENV_IDS).index(task.env)]
        else:
            kwargs["tasks"] = [task.env.split("/", 1)[1]]
        targets = select_targets(suite, **kwargs)
        dataset_id = targets[0].dataset_id
        if dataset_id not in list_datasets():
            log.info("collecting %d teacher episodes for %s", task.episodes, task.env)
            collect(targets, task.episodes, seed=self.seed, workers=2, only_success=True, progress=self.progress)
        return dataset_id

    def task_net(self, task: TaskSpec) -> NetConfig:
        return dataclasses.replace(self.net, obs_keys=list(task.obs_keys) or list(self.net.obs_keys),
                                   pred_horizon=task.pred_horizon or self.net.pred_horizon)

    def train(self, name: str, dataset_id: str, diffusion: DiffusionConfig, scheme: SchemeConfig,
              net: NetConfig | None = None) -> Policy:
        from training.data import WindowDataset
        from training.policy_build import build_policy
        from training.trainer import Trainer, TrainerConfig

        s = self.sizes
        net = net or self.net
        data = WindowDataset(dataset_id, obs_horizon=net.obs_horizon, pred_horizon=net.pred_horizon)
        policy = build_policy(data, copy.deepcopy(net), diffusion, scheme)
        cfg = TrainerConfig(max_steps=s.train_steps, batch_size=s.batch_size, lr=s.lr,
                            warmup_steps=min(500, s.train_steps // 10), ckpt_every=0, log_every=max(1, s.train_steps // 10),
                            progress=self.progress)
        trainer = Trainer(policy, data, cfg, self.run_dir / "policies" / name, self.device, seed=self.seed)
        metrics = trainer.fit()
        log.info("trained %s in %.0f s", name, metrics["train_wall_s"])
        return trainer.ema_policy.eval()

    def evaluate(self, policy, env_id: str) -> float:
        from training.evaluation import evaluate

        report = evaluate(policy, env_id, episodes=self.sizes.eval_episodes, num_envs=self.sizes.eval_num_envs,
                          seed=self.seed + 1_000_000, asynchronous=False, progress=False)
        return float(report["overall"]["success_rate"] or 0.0)

    # -- rows ------------------------------------------------------------------------------------------------------
    def time_rows(self, rows: list[_Row], obs1, obs64) -> None:
        """Latencies of every row, measured round-robin: on a shared machine whose speed drifts over minutes, a
        row timed minutes after another would carry the drift into their ratio. Each round times one window of
        every row (after its warm-up), at batch 1 and then at batch 64; medians over the rounds are reported."""
        torch.set_num_threads(self.sizes.threads)
        try:
            for name, obs, repeats in (("b1", obs1, self.sizes.latency_repeats), ("b64", obs64, self.sizes.b64_repeats)):
                for _ in range(repeats):
                    for row in rows:
                        row.setup()
                        window, singles = act_window(row.policy, obs, self.sizes.latency_window, row.warmup)
                        row.windows[name].append(window)
                        if name == "b1":
                            row.singles.extend(singles)
            for row in rows:
                row.setup()
                row.per_call = call_latency(row.policy, obs1, row.call_batch, row.level_shape)
        finally:
            torch.set_num_threads(max(1, os.cpu_count() or 1))

    def load(self, name: str, *_args, **_kwargs) -> Policy:
        """The policy `name` of the earlier run (from_run), as trained there."""
        path = self.from_run / "policies" / name / "checkpoints" / "last"
        if not path.is_dir():
            raise DistillError(f"from_run={self.from_run} has no policy {name} ({path} is missing); it was made "
                               f"with other tasks or settings")
        return Policy.from_pretrained(path, device=self.device).eval()

    def finish_row(self, task: str, row: _Row) -> dict[str, Any]:
        row.setup()
        policy = row.policy
        label = f"{policy.spec.net.name}-{row.label}"
        if self.from_run is not None:
            if (task, label) not in self.earlier:
                raise DistillError(f"from_run={self.from_run} has no row {label} for {task}")
            success = self.earlier[(task, label)]["success_rate"]
        else:
            success = self.evaluate(policy, task)
        out = {"task": task, "policy": label, "scheme": row.scheme, "steps": row.steps,
               "pred_horizon": int(policy.pred_horizon),
               "action_horizon": getattr(policy.scheme, "action_horizon", None),
               "params": n_params(policy), "calls_per_action": row.calls_per_action, "ms_per_call_b1": row.per_call,
               "ms_per_action_b1": float(np.median(row.windows["b1"])),
               "ms_per_action_b64": float(np.median(row.windows["b64"])),
               "p99_ms_per_action_b1": float(np.percentile(row.singles, 99)), "success_rate": success}
        log.info("%s", out)
        return out

    def run_task(self, task: TaskSpec) -> list[dict[str, Any]]:
        sc, net = self.schemes, self.task_net(task)
        sc = dataclasses.replace(sc, action_horizon=task.action_horizon or sc.action_horizon,
                                 stream_action_horizon=task.stream_action_horizon or sc.stream_action_horizon)
        dataset_id = self.dataset_for(task) if self.from_run is None else None
        obs1, obs64 = _obs_batch(task.env, 1, self.seed), _obs_batch(task.env, 64, self.seed)
        name = task.env.replace("/", "_")
        ta = sc.action_horizon
        train = functools.partial(self.train, net=net) if self.from_run is None else self.load
        chunk = SchemeConfig(name="chunk", action_horizon=ta)
        ddpm = DiffusionConfig(name="ddpm", num_train_steps=100, num_inference_steps=sc.ddpm_steps)
        ddim = dataclasses.replace(ddpm, name="ddim", num_inference_steps=sc.ddim_steps)
        edm = DiffusionConfig(name="edm", num_inference_steps=sc.edm_steps)
        stream = SchemeConfig(name="streaming", action_horizon=sc.stream_action_horizon, stream_calls=sc.stream_calls)
        trunc = SchemeConfig(name="truncated", action_horizon=ta, num_anchors=sc.num_anchors,
                             trunc_steps=sc.trunc_steps, train_modes=sc.train_modes)
        rows: list[_Row] = []
        warm = 2 * max(ta, sc.stream_action_horizon)

        p_ddpm = train(f"{name}-chunk-ddpm", dataset_id, ddpm, chunk)
        rows.append(_Row(p_ddpm, "chunk", f"ddpm{sc.ddpm_steps}", sc.ddpm_steps, sc.ddpm_steps / ta, 1, "sample", warm))
        p_ddim = _with_process(p_ddpm, ddim)
        rows.append(_Row(p_ddim, "chunk", f"ddim{sc.ddim_steps}", sc.ddim_steps, sc.ddim_steps / ta, 1, "sample", warm))
        p_edm = train(f"{name}-chunk-edm", dataset_id, edm, chunk)
        rows.append(_Row(p_edm, "chunk", f"edm{sc.edm_steps}", sc.edm_steps, sc.edm_steps / ta, 1, "sample", warm))
        p_stream = train(f"{name}-streaming-ddim", dataset_id, ddim, stream)
        s = p_stream.scheme
        rows.append(_Row(p_stream, "streaming", f"ddim-stream{s.levels}", s.levels, s.calls_per_action(), 1,
                         "position", warm + s.levels))
        for select in sc.trunc_select:  # denoised: each call over all K anchors; prior: over the chosen mode
            suffix = "" if select == "denoised" else f"-{select}"
            p_trunc = train(f"{name}-truncated-ddim{suffix}", dataset_id, ddim, dataclasses.replace(trunc, select=select))
            for k in ([sc.trunc_steps] if select == "denoised" else sc.trunc_prior_steps):
                rows.append(_Row(p_trunc, "truncated", f"ddim-trunc{k}{suffix}", k, k / ta,
                                 sc.num_anchors if select == "denoised" else 1, "sample", warm,
                                 setup=functools.partial(p_trunc.scheme.set_steps, k)))
        if self.from_run is None:
            from training.data import WindowDataset

            data = WindowDataset(dataset_id, obs_horizon=net.obs_horizon, pred_horizon=net.pred_horizon)
            ccfg = ConsistencyConfig(steps=min(sc.consistency_steps), max_steps=self.sizes.distill_steps,
                                     batch_size=self.sizes.batch_size, seed=self.seed, progress=self.progress)
            student = distill_consistency(p_edm, data, ccfg, self.device,
                                          run_dir=self.run_dir / "policies" / f"{name}-consistency-run")
            save_student(student, self.run_dir / "policies" / f"{name}-consistency")
        else:
            path = self.from_run / "policies" / f"{name}-consistency"
            if not path.is_dir():
                raise DistillError(f"from_run={self.from_run} has no consistency student for {task.env}")
            student = load_student(path, self.device).eval()
        for k in sc.consistency_steps:
            rows.append(_Row(student, "consistency", f"cd{k}", k, k / ta, 1, "sample", warm,
                             setup=functools.partial(set_student_steps, student, k)))
        log.info("timing %d rows of %s round-robin", len(rows), task.env)
        self.time_rows(rows, obs1, obs64)
        self.deploy_rows += self.deploy_forms(task.env, rows, obs1, obs64)
        return [self.finish_row(task.env, row) for row in rows]

    def deploy_forms(self, task: str, rows: list[_Row], obs1, obs64) -> list[dict[str, Any]]:
        from alloy.benchmarks.deploy_forms import time_forms

        out = []
        for scheme in self.schemes.deploy:
            cands = [r for r in rows if r.scheme == scheme]
            pick = {"chunk": lambda r: "ddim" in r.label, "truncated": lambda r: "prior" in r.label}.get(scheme)
            cands = [r for r in cands if pick(r)] or cands if pick else cands
            if not cands:
                continue
            row = cands[0]
            row.setup()
            name = f"{_safe(task)}-{row.policy.spec.net.name}-{row.label}"
            s = self.sizes
            for r in time_forms(name, row.policy, obs1, obs64, self.run_dir / "artifacts", s.latency_window,
                                s.latency_repeats, row.warmup):
                out.append({"task": task, **r})
        return out

    def mode_cache_rows(self) -> list[dict[str, Any]]:
        """Cached vs uncached MoDE sampling at batch 1 (random weights with spread routers: speed and equality do
        not depend on training), full chunk EDM and streaming."""
        task = self.tasks[0]
        obs1 = _obs_batch(task.env, 1, self.seed)
        dims = {k: v.shape[1] for k, v in obs1.items()}
        out = []
        sc = self.schemes
        for scheme in (SchemeConfig(name="chunk", action_horizon=sc.action_horizon),
                       SchemeConfig(name="streaming", action_horizon=sc.stream_action_horizon,
                                    stream_calls=sc.stream_calls)):
            from policies import PolicySpec

            net = dataclasses.replace(copy.deepcopy(self.net), name="mode", language=False)
            diff = DiffusionConfig(name="edm", num_inference_steps=sc.edm_steps)
            torch.manual_seed(self.seed)
            policy = Policy(PolicySpec(obs_dims=dims, action_dim=int(_action_dim(task.env)), net=net, diffusion=diff,
                                       scheme=scheme)).to(self.device).eval()
            with torch.no_grad():
                for block in policy.net.blocks:
                    block.moe.router.proj.weight.normal_(0, 1.0)
            torch.set_num_threads(self.sizes.threads)
            actions, lat = {}, {}
            for cached in (True, False):
                policy.expert_cache.enabled = cached
                policy.reset()
                torch.manual_seed(self.seed)
                actions[cached] = np.stack([policy.act(obs1) for _ in range(self.sizes.latency_window)])
                lat[cached] = act_latency(policy, obs1, obs1, dataclasses.replace(self.sizes, b64_repeats=1),
                                          2 * sc.action_horizon + 10)["ms_per_action_b1"]
            torch.set_num_threads(max(1, os.cpu_count() or 1))
            out.append({"scheme": scheme.name, "steps": sc.edm_steps if scheme.name == "chunk" else policy.scheme.levels,
                        "params": n_params(policy), "ms_per_action_b1_cached": lat[True],
                        "ms_per_action_b1_uncached": lat[False], "speedup": lat[False] / lat[True],
                        "max_abs_action_diff": float(np.abs(actions[True] - actions[False]).max())})
            log.info("%s", out[-1])
        return out

    def run(self) -> dict[str, Any]:
        self.deploy_rows: list[dict[str, Any]] = []
        rows = [r for task in self.tasks for r in self.run_task(task)]
        mode = self.mode_cache_rows() if self.mode_cache else []
        return {"rows": rows, "mode_cache": mode, "deploy": self.deploy_rows, "device": str(self.device),
                "threads": self.sizes.threads,
                "timed_policies_from": str(self.from_run) if self.from_run else None,
                "torch": torch.__version__, "cpu_count": os.cpu_count()}


def _safe(env_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in env_id)


def _action_dim(env_id: str) -> int:
    from envs import make_env

    env = make_env(env_id)
    try:
        return int(np.prod(env.action_space.shape))
    finally:
        env.close()


COLUMNS = ("policy", "scheme", "steps", "params", "calls_per_action", "ms_per_call_b1", "ms_per_action_b1",
           "ms_per_action_b64", "p99_ms_per_action_b1", "success_rate")


def markdown(result: dict[str, Any], title: str = "Inference benchmark") -> str:
    lines = [f"# {title}", "", f"device {result['device']}, {result['threads']} thread(s), torch {result['torch']}", ""]
    for task in dict.fromkeys(r["task"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["task"] == task]
        base = {r["policy"]: r for r in rows}
        ddim = next((r for r in rows if r["scheme"] == "chunk" and "ddim" in r["policy"]), None)
        ddpm = next((r for r in rows if r["scheme"] == "chunk" and "ddpm" in r["policy"]), None)
        lines += [f"## {task}", "", "| " + " | ".join(COLUMNS) + " | vs DDIM | vs DDPM |",
                  "|" + "---|" * (len(COLUMNS) + 2)]
        for r in base.values():
            cells = [f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS]
            vs = [f"{(ref['ms_per_action_b1'] / r['ms_per_action_b1']):.1f}x" if ref else "" for ref in (ddim, ddpm)]
            lines.append("| " + " | ".join(cells + vs) + " |")
        lines.append("")
    if result.get("mode_cache"):
        lines += ["## MoDE expert caching (batch 1)", "",
                  "| scheme | steps | params | ms/action cached | ms/action uncached | speed-up | max abs action diff |",
                  "|---|---|---|---|---|---|---|"]
        for m in result["mode_cache"]:
            lines.append(f"| {m['scheme']} | {m['steps']} | {m['params']} | {m['ms_per_action_b1_cached']:.3g} | "
                         f"{m['ms_per_action_b1_uncached']:.3g} | {m['speedup']:.2f}x | {m['max_abs_action_diff']:.2g} |")
    if result.get("deploy"):
        from alloy.benchmarks.deploy_forms import markdown as deploy_markdown

        lines += deploy_markdown(result["deploy"])
    return "\n".join(lines) + "\n"


def write_result(result: dict[str, Any], run_dir: str | Path, title: str) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    js, md = run_dir / "inference.json", run_dir / "inference.md"
    for path, text in ((js, json.dumps(result, indent=2)), (md, markdown(result, title))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return js, md
