"""Specialists into one generalist: DAgger or offline distillation on the one rollout engine and the one trainer.

Every round runs all robots in one vector env (`envs_per_robot` slots per robot, each robot's physical parameters
randomised per episode within its ranges). A `RoutedPolicy` holds each robot's specialist and labels every visited
state of its own slots; the student conditions on the `embodiment` descriptor in its observation.

- dagger: round 0 is driven by the specialists; in round r >= 1 each episode is driven by the specialist with
  probability beta_r (`BetaSchedule`) and by the student otherwise. The labelled episodes of every round are kept
  (`rounds/round_<r>.npz`) and aggregated, and the student trains `steps_per_round` more steps on all of them.
- offline: the specialists drive every episode (a share of them with Gaussian action noise on the executed actions,
  the labels staying clean, so the data covers recoveries); the same number of episodes as DAgger's rounds is
  collected at once, then the student trains as many steps.

Chunk labels: a student that predicts Tp actions trains on windows of consecutive labels along the visited
trajectory, i.e. the specialist's action at each state the rollout actually reached (in DAgger rounds, the states
the student led to), not an open-loop plan of the specialist. `alloy distill` reports the student's success either
way; `steps_per_round`, `policy.pred_horizon` and `scheme.action_horizon` are the knobs.

An interrupted run resumes (`resume=true`) from the saved rounds and the trainer's `checkpoints/last`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from distill.config import DistillConfig
from distill.errors import DistillError
from policies.atomic import atomic_write_json, atomic_write_npz, recover_dir
from training.datasets_io import Episode

log = logging.getLogger("alloy.distill")

MEMORY_SOURCE = "labels"
EVAL_SEED_OFFSET = 1_000_000


# ---------------------------------------------------------------------------------------------------- schedule
def beta_for_round(schedule, r: int, rounds: int) -> float:
    """Probability that the specialist drives an episode of round r (1 for round 0)."""
    if r <= 0:
        return 1.0
    if schedule.kind == "linear":
        last = schedule.rounds_to_end if schedule.rounds_to_end > 0 else max(1, rounds - 1)
        frac = min(1.0, r / last)
        return float(schedule.start + (schedule.end - schedule.start) * frac)
    if schedule.kind == "exponential":
        return float(max(schedule.end, schedule.start * schedule.decay ** r))
    raise DistillError(f"unknown beta schedule {schedule.kind!r}; use linear or exponential")


# ---------------------------------------------------------------------------------------------------- specialists
@dataclasses.dataclass
class Specialist:
    env_id: str
    path: Path
    policy: Any
    randomize: dict[str, list[float]]
    explicit: bool


def _checkpoint_config(path: Path) -> dict:
    try:
        cfg = yaml.safe_load((recover_dir(path) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def parse_specialists(entries: list[str]) -> list[tuple[str | None, Path]]:
    """`dir` or `<env id>=<dir>` entries."""
    if not entries:
        raise DistillError("no specialists given; pass specialists=[<dir>,...] (residual specialists from `alloy rl`, "
                           "and '<env id>=<dir>' for a policy that does not record its robot, e.g. the base)")
    out = []
    for entry in entries:
        env, sep, path = str(entry).partition("=")
        out.append((env.strip() if sep else None, Path((path if sep else env).strip()).expanduser()))
    return out


def resolve_specialists(entries: list[str], randomize: dict, device: str) -> list[Specialist]:
    """Load every specialist, find its robot and randomisation, refuse duplicates and mismatched specs."""
    from training.evaluation import load_policy

    found: dict[str, list[Specialist]] = {}
    for env, path in parse_specialists(entries):
        if not path.exists():
            raise DistillError(f"specialist {str(path)!r} does not exist; pass checkpoint directories")
        cfg = _checkpoint_config(path)
        train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
        robot = env or train.get("env")
        if not robot:
            raise DistillError(f"{str(path)!r} does not record which robot it drives; name it: "
                               f"'<env id>={path}' (e.g. alloy/Nav-Holonomic-v0={path})")
        policy = load_policy(path, device)
        ranges = randomize.get(robot, train.get("randomize") or {})
        found.setdefault(robot, []).append(Specialist(robot, path, policy, dict(ranges), env is not None))
    chosen = []
    for robot, cands in found.items():
        explicit = [c for c in cands if c.explicit]
        if len(cands) > 1 and len(explicit) != 1:
            raise DistillError(f"{len(cands)} specialists drive {robot} ({', '.join(str(c.path) for c in cands)}); "
                               f"keep one, or name the one that wins with '{robot}=<dir>'")
        chosen.append(explicit[0] if len(cands) > 1 else cands[0])
    actions = {getattr(s.policy, "action_dim", None) for s in chosen} - {None}
    if len(actions) > 1:
        raise DistillError(f"the specialists act in different action spaces ({sorted(actions)}); distil specialists "
                           f"of one suite")
    return chosen


def check_same_spaces(specialists: list[Specialist], env_kwargs: dict[str, dict]) -> tuple[Any, Any]:
    """The robots' envs must share observation and action spaces, and each specialist must fit its robot."""
    from envs import make_env
    from training.evaluation import check_policy_matches_env

    spaces = None
    for s in specialists:
        env = make_env(s.env_id, **env_kwargs.get(s.env_id, {}))
        try:
            pair = (env.observation_space, env.action_space)
        finally:
            env.close()
        check_policy_matches_env(s.policy, pair[0], pair[1], s.env_id)
        if spaces is None:
            spaces = pair
        elif str(pair[0]) != str(spaces[0]) or str(pair[1]) != str(spaces[1]):
            raise DistillError(f"{s.env_id} has other observation or action spaces than {specialists[0].env_id}; the "
                               f"robots of one generalist must share them")
    return spaces


# ---------------------------------------------------------------------------------------------------- round data
def save_round(path: Path, episodes: list[Episode], robots: list[str]) -> None:
    """One round's labelled episodes as a byte-stable npz (arrays only: no pickles)."""
    arrays: dict[str, np.ndarray] = {
        "lengths": np.asarray([len(e.actions) for e in episodes], dtype=np.int64),
        "robot": np.asarray([robots.index(e.infos["env_id"]) for e in episodes], dtype=np.int64),
        "seed": np.asarray([e.seed for e in episodes], dtype=np.int64),
        "success": np.asarray([e.success for e in episodes], dtype=bool),
        "student_drove": np.asarray([e.infos.get("driver") == "A" for e in episodes], dtype=bool),
        "noisy": np.asarray([bool(e.infos.get("noisy")) for e in episodes], dtype=bool),
        "actions": np.concatenate([e.actions for e in episodes]).astype(np.float32),
        "labels": np.concatenate([e.infos["labels"] for e in episodes]).astype(np.float32),
        "label_std": np.concatenate([e.infos["label_std"] for e in episodes]).astype(np.float32),
    }
    for key in episodes[0].observations:
        arrays[f"obs.{key}"] = np.concatenate([e.observations[key] for e in episodes]).astype(np.float32)
    atomic_write_npz(path, arrays)


def load_round(path: Path, robots: list[str]) -> list[Episode]:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DistillError(f"cannot read round data {path} ({e}); delete it to collect that round again") from None
    lengths = data["lengths"]
    keys = [k[4:] for k in data if k.startswith("obs.")]
    a0, o0, out = 0, 0, []
    for i, n in enumerate(lengths):
        n = int(n)
        out.append(Episode(
            observations={k: data[f"obs.{k}"][o0:o0 + n + 1] for k in keys},
            actions=data["actions"][a0:a0 + n], rewards=np.zeros(n, dtype=np.float32),
            terminations=np.zeros(n, dtype=bool), truncations=np.r_[np.zeros(n - 1, dtype=bool), True],
            seed=int(data["seed"][i]), success=bool(data["success"][i]),
            infos={"labels": data["labels"][a0:a0 + n], "label_std": data["label_std"][a0:a0 + n],
                   "env_id": robots[int(data["robot"][i])], "noisy": bool(data["noisy"][i]),
                   "driver": "A" if data["student_drove"][i] else "B"}))
        a0, o0 = a0 + n, o0 + n + 1
    return out


# ---------------------------------------------------------------------------------------------------- the run
class Distillation:
    """One `alloy distill` run."""

    def __init__(self, cfg: DistillConfig, student_cfg: dict, trainer_cfg, run_dir: str | Path, resume: bool = False,
                 config: dict | None = None):
        from distill.config import METHODS, OBJECTIVES
        from training.runtime import resolve_device

        if cfg.method not in METHODS:
            raise DistillError(f"unknown method {cfg.method!r}; choose one of: {', '.join(METHODS)}")
        if cfg.objective not in OBJECTIVES:
            raise DistillError(f"unknown objective {cfg.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
        self.cfg, self.student_cfg, self.trainer_cfg = cfg, student_cfg, trainer_cfg
        self.run_dir, self.resume, self.config = Path(run_dir), resume, config or {}
        self.device = str(resolve_device(cfg.device))
        self.specialists = resolve_specialists(list(cfg.specialists), dict(cfg.randomize), self.device)
        self.robots = [s.env_id for s in self.specialists]
        self.train_kwargs = {s.env_id: ({"randomize": s.randomize} if s.randomize else {}) for s in self.specialists}
        self.observation_space, self.action_space = check_same_spaces(self.specialists, self.train_kwargs)
        net = student_cfg["policy"]
        keys = list(net.obs_keys) or list(self.observation_space.spaces)
        if "embodiment" not in keys:
            raise DistillError(f"the student must see the robot: its policy.obs_keys {keys} lack 'embodiment' (the "
                               f"one-hot id and physical parameters); add it")
        unknown = [k for k in keys if k not in self.observation_space.spaces]
        if unknown:
            raise DistillError(f"policy.obs_keys {unknown} are not observation keys of the robots' envs "
                               f"({', '.join(self.observation_space.spaces)})")
        self.objective_name = cfg.objective
        if self.objective_name == "auto":
            self.objective_name = "kl" if student_cfg["diffusion"].name == "gaussian" else "imitation"
        if self.objective_name in ("mse", "kl", "taid") and student_cfg["diffusion"].name != "gaussian":
            raise DistillError(f"the {self.objective_name} objective matches a Gaussian student; use "
                               f"diffusion=gaussian (e.g. student=gaussian_mlp) or objective=imitation")
        for v in cfg.variants:
            if v.env not in self.robots:
                raise DistillError(f"variant {v.name!r} runs {v.env!r}, which no specialist drives "
                                   f"({', '.join(self.robots)})")
        self.total_steps = int(cfg.rounds) * int(cfg.steps_per_round)
        self.history: list[dict] = []
        self._router = self.router()

    # ------------------------------------------------------------------ pieces
    @property
    def num_envs(self) -> int:
        return len(self.robots) * int(self.cfg.envs_per_robot)

    @property
    def slot_robots(self) -> list[str]:
        return [r for r in self.robots for _ in range(int(self.cfg.envs_per_robot))]

    def router(self):
        from training.rollout.routed import RoutedPolicy

        groups = [j for j in range(len(self.robots)) for _ in range(int(self.cfg.envs_per_robot))]
        floor = float(self.cfg.label_std_floor)
        return RoutedPolicy([s.policy for s in self.specialists], groups, std_floor=floor, names=self.robots)

    def make_vec(self):
        from gymnasium.vector import AutoresetMode

        from envs.vector import make_vec_env
        from training.evaluation.guard import RolloutGuard

        guard = functools.partial(RolloutGuard, keep_info=False)
        slots = self.slot_robots
        return make_vec_env(slots, len(slots), int(self.cfg.seed), len(slots) > 1, wrappers=(guard,),
                            autoreset_mode=AutoresetMode.DISABLED, workers=self.cfg.workers,
                            per_env_kwargs=[self.train_kwargs[r] for r in slots])

    def tasks(self, r: int, episodes: int):
        from training.collect import episode_seed
        from training.rollout.engine import EpisodeTask

        out = []
        for j, robot in enumerate(self.robots):
            for e in range(episodes):
                index = (r * len(self.robots) + j) * episodes + e
                out.append(EpisodeTask(index, episode_seed(int(self.cfg.seed), robot, index), env_id=robot))
        return out

    def collect(self, r: int, driver, beta: float, noise=None, episodes: int | None = None) -> list[Episode]:
        """One round of labelled episodes from every robot (driver = the student or the router)."""
        from envs.vector import vector_layout
        from training.rollout import EpisodeRecorder, RolloutEngine
        from training.rollout.engine import Mixing, policy_threads

        router = self._router
        driver = router if driver is None else driver
        recorder = EpisodeRecorder()
        mixing = Mixing(router, beta) if driver is not router else None
        layout = vector_layout(self.num_envs, self.num_envs > 1, self.cfg.workers)
        engine = RolloutEngine(driver, "nav robots", self.make_vec, self.num_envs, labeller=router, mixing=mixing,
                               hooks=(recorder,), noise=noise, slot_env_ids=self.slot_robots)
        n = int(episodes if episodes is not None else self.cfg.episodes_per_round)
        with policy_threads(layout["worker_processes"]), engine:
            results = engine.run(self.tasks(r, n))
        eps = recorder.sorted_episodes()
        by_robot = {robot: [res.success for res in results if res.env_id == robot] for robot in self.robots}
        log.info("round %d: %d episodes (%s), beta %.2f", r, len(eps),
                 ", ".join(f"{k.split('/')[-1]} {np.mean(v):.0%}" for k, v in by_robot.items() if v), beta)
        return eps

    # ------------------------------------------------------------------ train
    def _dataset(self, episodes: list[Episode]):
        from training.data import MemoryEpisodes, WindowDataset

        net, scheme = self.student_cfg["policy"], self.student_cfg["scheme"]
        source = MemoryEpisodes(MEMORY_SOURCE, list(episodes), metadata={"env_id": "multi-robot"}, actions="labels")
        return WindowDataset([source], obs_horizon=net.obs_horizon, pred_horizon=net.pred_horizon,
                             action_horizon=scheme.action_horizon)

    def _objective(self):
        if self.objective_name == "imitation":
            return None
        from distill.objectives import GaussianDistillation

        return GaussianDistillation(self.objective_name, self.total_steps, std_floor=float(self.cfg.label_std_floor))

    def _trainer(self, dataset, resume: bool):
        from training.policy_build import build_policy
        from training.trainer import Trainer

        s = self.student_cfg
        student = build_policy(dataset, s["policy"], s["diffusion"], s["scheme"])
        tcfg = dataclasses.replace(self.trainer_cfg, max_steps=self.total_steps, eval_every=0)
        return Trainer(student, dataset, tcfg, self.run_dir, __import__("torch").device(self.device),
                       seed=int(self.cfg.seed), config=self.config, resume=resume, objective=self._objective())

    def _round_path(self, r: int) -> Path:
        return self.run_dir / "rounds" / f"round_{r:03d}.npz"

    def _evaluate(self, policy, episodes: int, seed: int, run_dir: Path | None = None, env_ids=None, kwargs=None,
                  name: str | None = None) -> dict:
        from training.evaluation import evaluate

        return evaluate(policy, list(env_ids or self.robots), episodes=episodes, num_envs=self.cfg.eval_num_envs,
                        seed=seed, env_kwargs=kwargs or {}, run_dir=run_dir, progress=False, policy_name=name)

    def fit(self) -> Path:
        """Run every round (or the offline collection) and the training; returns the generalist's checkpoint."""
        from training.rollout.engine import ActionNoise

        cfg = self.cfg
        rounds = int(cfg.rounds)
        episodes: list[Episode] = []
        done = 0
        if self.resume:
            while self._round_path(done).is_file():
                episodes += load_round(self._round_path(done), self.robots)
                done += 1
            if done:
                log.info("resuming: %d round(s) of data on disk (%d episodes)", done, len(episodes))
        trainer = None
        if cfg.method == "offline":
            if done == 0:
                noise = ActionNoise(float(cfg.noise_std), float(cfg.noisy_episodes)) if cfg.noise_std > 0 else None
                episodes = self.collect(0, None, 1.0, noise=noise, episodes=rounds * int(cfg.episodes_per_round))
                save_round(self._round_path(0), episodes, self.robots)
            dataset = self._dataset(episodes)
            trainer = self._trainer(dataset, resume=self.resume)
            trainer.fit()
            self._round_eval(trainer, rounds - 1, len(episodes))
        else:
            for r in range(rounds):
                if r >= done:
                    beta = beta_for_round(cfg.beta, r, rounds)
                    driver = None if trainer is None else trainer.ema_policy.eval()
                    new = self.collect(r, driver, beta)
                    save_round(self._round_path(r), new, self.robots)
                    episodes += new
                if trainer is None:
                    if r + 1 < done:
                        continue  # resuming: build the student once every saved round is loaded
                    dataset = self._dataset(episodes)
                    trainer = self._trainer(dataset, resume=self.resume)
                elif r >= done:
                    trainer.dataset.extend(MEMORY_SOURCE, new)
                trainer.fit(until=(r + 1) * int(cfg.steps_per_round))
                self._round_eval(trainer, r, len(episodes))
        atomic_write_json(self.run_dir / "distill_history.json", {"rounds": self.history})
        return self.run_dir / "checkpoints" / "last"

    def _round_eval(self, trainer, r: int, n_episodes: int) -> None:
        entry: dict[str, Any] = {"round": r, "train_step": trainer.step, "episodes": n_episodes,
                                 "env_steps": None}
        if self.cfg.round_eval_episodes:
            rep = self._evaluate(trainer.ema_policy.eval(), int(self.cfg.round_eval_episodes),
                                 int(self.cfg.seed) + EVAL_SEED_OFFSET, name=f"student after round {r}")
            entry["success"] = {k: v["success_rate"] for k, v in rep["per_env"].items()}
            entry["success_mean"] = float(np.mean(list(entry["success"].values())))
            log.info("round %d: student success %s", r,
                     ", ".join(f"{k.split('/')[-1]} {v:.0%}" for k, v in entry["success"].items()))
        self.history.append(entry)


# ---------------------------------------------------------------------------------------------------- the report
def _cell(m: dict | None) -> str:
    if not m or m.get("success_rate") is None:
        return "-"
    lo, hi = m["success_ci"]
    t = m.get("time_to_success_mean")
    return f"{m['success_rate']:.1%} [{lo:.2f}, {hi:.2f}]" + (f", {t:.1f} s" if t is not None else "")


def write_report(run_dir: Path, table: dict, variants: list[dict], meta: dict) -> dict:
    """report.json and report.md: base vs specialist vs generalist per robot, then the variants."""
    report = {"robots": table, "variants": variants, **meta}
    atomic_write_json(run_dir / "report.json", json.loads(json.dumps(report, default=float)))
    lines = [f"# Distillation: {meta.get('method')} into {meta.get('student')}", "",
             "Success with 95% Wilson interval and mean time to goal (successful episodes), "
             f"{meta.get('eval_episodes')} episodes per cell (seeds from {meta.get('seed')}).", "",
             "| robot | base | specialist | generalist | generalist / specialist |", "|---|---|---|---|---|"]
    for robot, row in table.items():
        spec, gen = row.get("specialist"), row.get("generalist")
        ratio = "-"
        if spec and gen and spec.get("success_rate"):
            ratio = f"{gen['success_rate'] / spec['success_rate']:.1%}"
        lines.append(f"| {robot} | {_cell(row.get('base'))} | {_cell(spec)} | {_cell(gen)} | {ratio} |")
    if variants:
        lines += ["", "Variants (physical parameters the student did not see as such):", "",
                  "| variant | robot | parameters | inside the training ranges | generalist |", "|---|---|---|---|---|"]
        for v in variants:
            lines.append(f"| {v['name']} | {v['env']} | {v['kwargs']} | {'yes' if v['in_range'] else 'no'} | "
                         f"{_cell(v.get('generalist'))} |")
    means = meta.get("means") or {}
    if means:
        lines += ["", "Mean success over the robots: " + ", ".join(f"{k} {v:.1%}" for k, v in means.items()
                                                                   if v is not None and not math.isnan(v))]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    return report
