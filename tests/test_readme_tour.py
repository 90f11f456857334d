"""The README's tour, run as written (issue 21): every `alloy` / `torchrun` command of its bash blocks and every
Python block, in README order, in one fresh directory with its own data root, at toy size. Sizes are scaled by
rewriting the size keys a command sets (`episodes=200` -> `episodes=2`) and appending toy sizes for the ones it
leaves at their defaults; nothing else of a command is changed, so a command that breaks as written fails here.
Slow (about ten minutes on 2 cores): `.ci/run` runs it once per submission after `make test`;
`pytest -m slow tests/test_readme_tour.py` runs it by hand."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

# size keys a README command may set -> their toy value
SCALE = {
    "episodes": "2", "episodes_per_task": "1", "trainer.max_steps": "4", "trainer.eval_every": "2",
    "total_steps": "64", "rounds": "1", "num_envs": "2",
}
# toy sizes appended where a command leaves them at their defaults (per subcommand; the first words of the command)
TOY = {
    "bench env": ["steps=50"],
    "bench data": ["num_batches=5", "warmup_batches=1", "batch_size=16"],
    "bench rollout": ["num_envs=[1,2]", "episodes_per_env=1", "max_episode_steps=20", "raw_steps=50", "repeats=1"],
    "bench inference": ["tasks=[alloy/Nav-Holonomic-v0]", "sizes.demos=3", "sizes.train_steps=4", "sizes.batch_size=8",
                        "sizes.d_model=32", "sizes.n_layers=1", "sizes.distill_steps=2", "sizes.eval_episodes=1",
                        "sizes.eval_num_envs=1", "sizes.latency_window=40", "sizes.latency_repeats=1",
                        "sizes.b64_repeats=1", "sizes.num_anchors=4", "ddpm_steps=3", "deploy=[chunk]",
                        "progress=false"],
    "bench rl": ["steps=64", "warmup_steps=16", "repeats=1", "num_envs=2", "ppo.n_steps=16", "ppo.batch_size=32"],
    "collect": ["num_envs=2", "progress=false"],
    "eval": ["episodes=2", "num_envs=2"],
    "train": ["trainer.max_steps=4", "trainer.batch_size=8", "trainer.warmup_steps=1", "trainer.ckpt_every=2",
              "trainer.eval_episodes=1", "trainer.eval_num_envs=1", "trainer.progress=false", "policy.d_model=32",
              "policy.n_layers=1", "policy.n_heads=2", "policy.mlp_hidden=32"],
    "rl": ["total_steps=64", "num_envs=2", "ppo.n_steps=16", "ppo.batch_size=32", "ppo.n_epochs=1",
           "sac.learning_starts=16", "sac.batch_size=16", "eval_every=32", "eval_episodes=1", "eval_num_envs=1",
           "final_eval_episodes=1", "progress=false"],
    "distill": ["episodes_per_round=1", "steps_per_round=4", "envs_per_robot=1", "eval_episodes=1",
                "eval_num_envs=1", "trainer.batch_size=8", "trainer.progress=false", "progress=false"],
    "export": ["check_steps=2"],
}
# the pipeline's stages at toy size (each list overrides the stage's own; the README's items are added after them)
PIPELINE = {
    "robots": "[holonomic,diffdrive]", "rl_robots": "[diffdrive]", "eval_episodes": "1", "variants": "[]",
    "collect.overrides": ["episodes=3", "num_envs=1", "progress=false"],
    "train.overrides": ["experiment=nav_dit_stream", "policy.d_model=32", "policy.n_layers=1", "policy.n_heads=2",
                        "trainer.max_steps=4", "trainer.batch_size=8", "trainer.warmup_steps=1",
                        "trainer.ckpt_every=4", "trainer.eval_every=0", "trainer.progress=false"],
    "eval.overrides": ["num_envs=1", "video=false"],
    "rl.overrides": ["total_steps=32", "num_envs=1", "ppo.n_steps=32", "ppo.batch_size=32", "ppo.n_epochs=1",
                     "eval_every=0", "eval_episodes=1", "eval_num_envs=1", "final_eval_episodes=1"],
    "distill.overrides": ["rounds=1", "episodes_per_round=1", "steps_per_round=4", "envs_per_robot=1",
                          "eval_num_envs=1", "trainer.batch_size=8", "trainer.progress=false"],
    "export.overrides": ["check_steps=2"],
}
PIPELINE_SCALE = {"total_steps": "48"}  # inside the README's own stage overrides


def tour() -> list[tuple[str, str]]:
    """("bash", command) for each command line of the README's bash blocks (backslash continuations joined;
    `make` lines, which are the tour's frame rather than its steps, left out) and ("python", source) per block."""
    steps, block, lang = [], [], None
    for line in (REPO / "README.md").read_text().splitlines():
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence and lang is None:
            lang, block = fence.group(1), []
        elif fence:
            if lang == "python":
                steps.append(("python", "\n".join(block)))
            elif lang == "bash":
                text = "\n".join(block).replace("\\\n", " ")
                for cmd in text.splitlines():
                    cmd = cmd.split(" #")[0].strip() if not cmd.lstrip().startswith("#") else ""
                    if cmd and not cmd.startswith("make "):
                        steps.append(("bash", cmd))
            lang = None
        elif lang is not None:
            block.append(line)
    return steps


def _key(token: str) -> str:
    return token.split("=", 1)[0].lstrip("+~")


def toy(argv: list[str]) -> list[str]:
    """An `alloy <command> ...` argv at toy size."""
    words = [a for a in argv[:3] if "=" not in a and not a.startswith("-")]
    command = " ".join(words[:2]) if words[:1] == ["bench"] else " ".join(words[:1])
    if command == "pipeline":
        return _toy_pipeline(argv)
    out = []
    for a in argv:
        key = _key(a)
        if "=" in a and key in SCALE and re.fullmatch(r"\d+", a.split("=", 1)[1]):
            a = f"{a.split('=', 1)[0]}={SCALE[key]}"
        out.append(a.replace("metaworld_mt50", "metaworld_mt10"))  # 10 tasks stand for 50
    given = {_key(a) for a in out if "=" in a}
    if any(a in ("--help", "--cfg") for a in out):
        return out
    return out + [t for t in TOY.get(command, []) if _key(t) not in given]


def _toy_pipeline(argv: list[str]) -> list[str]:
    out, lists = [], {k: list(v) for k, v in PIPELINE.items() if isinstance(v, list)}
    for a in argv:
        key = _key(a)
        if key in lists:  # the README's own stage overrides come after the toy ones, so they win
            items = [i.strip() for i in a.split("=", 1)[1].strip("[]").split(",") if i.strip()]
            for i in items:  # kept as written (quoted or not), only a size value scaled
                k = i.strip('"').split("=", 1)[0]
                lists[key].append(i.replace(i.strip('"'), f"{k}={PIPELINE_SCALE[k]}") if k in PIPELINE_SCALE else i)
        else:
            out.append(a)
    given = {_key(a) for a in out if "=" in a}
    out += [f"{k}={v}" for k, v in PIPELINE.items() if not isinstance(v, list) and k not in given]
    out += [f"{k}=[{','.join(i if i.startswith(chr(34)) else json_str(i) for i in v[:len(PIPELINE[k])])}"
            f"{''.join(',' + i for i in v[len(PIPELINE[k]):])}]" for k, v in lists.items()]
    return out + ["store=outputs/pipeline/store", "device=cpu"]


def json_str(item: str) -> str:
    return '"' + item.replace('"', '\\"') + '"'


def _argv(cmd: str) -> list[str]:
    argv = shlex.split(cmd)
    if argv[0] == "alloy":
        return [sys.executable, "-m", "alloy.cli", *toy(argv[1:])]
    if argv[0] == "torchrun":
        rest = argv[1:]
        i = rest.index("alloy.cli")
        return [sys.executable, "-m", "torch.distributed.run", *rest[:i + 1], *toy(rest[i + 1:])]
    raise AssertionError(f"the tour has a command this test does not know how to run: {cmd}")


def test_every_readme_command_runs_as_written_at_toy_size(tmp_path):
    steps = tour()
    assert sum(kind == "bash" for kind, _ in steps) >= 25 and any(kind == "python" for kind, _ in steps)
    env = {**os.environ, "ALLOY_DATA_DIR": str(tmp_path / "data"), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    work = tmp_path / "work"
    work.mkdir()
    for kind, text in steps:
        argv = _argv(text) if kind == "bash" else [sys.executable, "-c", text]
        res = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        shown = text if kind == "bash" else text.splitlines()[0] + " ..."
        assert res.returncode == 0, (f"README command failed (exit {res.returncode}): {shown}\nran: "
                                     f"{shlex.join(argv[3:] if kind == 'bash' else argv[:2])}\n{res.stderr[-3000:]}")
