"""`alloy pipeline`: every stage at toy size, caching by content (a rerun skips everything, a changed stage reruns
that stage and what follows), stage subsets, the report, and bad input stopping before any stage."""

from __future__ import annotations

import json

from alloy import cli

TINY = [
    "robots=[holonomic,diffdrive]", "rl_robots=[diffdrive]", "eval_episodes=1", "variants=[]",
    'collect.overrides=["episodes=3","num_envs=1","progress=false"]',
    'train.overrides=["experiment=nav_dit_stream","policy.d_model=32","policy.n_layers=1","policy.n_heads=2",'
    '"trainer.max_steps=4","trainer.batch_size=8","trainer.warmup_steps=1","trainer.ckpt_every=4",'
    '"trainer.eval_every=0","trainer.progress=false"]',
    'eval.overrides=["num_envs=1","video=false"]',
    'rl.overrides=["total_steps=32","num_envs=1","ppo.n_steps=32","ppo.batch_size=32","ppo.n_epochs=1",'
    '"eval_every=0","eval_episodes=1","eval_num_envs=1","final_eval_episodes=1"]',
    'distill.overrides=["rounds=1","episodes_per_round=1","steps_per_round=4","envs_per_robot=1",'
    '"eval_num_envs=1","trainer.batch_size=8","trainer.progress=false"]',
    'export.overrides=["check_steps=2"]',
    "device=cpu",
]


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


def test_pipeline_runs_every_stage_caches_by_content_and_reports(tmp_path, capsys):
    store = tmp_path / "store"
    run_dir = tmp_path / "run"
    assert cli.main(["pipeline", *TINY, f"store={store}", f"hydra.run.dir={run_dir}"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    stages = report["stages"]
    assert list(stages) == ["collect", "train", "eval_base", "eval_planner", "rl", "distill", "export",
                            "eval_artifact"]
    assert not any(s["cached"] for s in stages.values())
    for stage in stages:
        assert (run_dir / stage / "manifest.json").is_file(), stage
    robots = report["robots"]
    assert set(robots) == {"alloy/Nav-Holonomic-v0", "alloy/Nav-Diffdrive-v0"}
    for env, row in robots.items():
        assert {"base", "planner", "generalist", "artifact", "specialist"} <= set(row), (env, row)
    assert report["export"]["max_abs_action_diff_onnx"] < 1e-4
    html = (run_dir / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html
    assert (run_dir / "export" / "artifact" / "policy.json").is_file()

    # a rerun trusts every stage whose key matches: nothing runs again
    again = tmp_path / "again"
    assert cli.main(["pipeline", *TINY, f"store={store}", f"hydra.run.dir={again}"]) == 0
    assert all(s["cached"] for s in json.loads((again / "report.json").read_text())["stages"].values())

    # a change of the distillation reruns it and what follows it, nothing before it
    changed = tmp_path / "changed"
    args = [a if not a.startswith("distill.overrides") else a.replace('"rounds=1"', '"rounds=1","seed=1"')
            for a in TINY]
    assert cli.main(["pipeline", *args, f"store={store}", f"hydra.run.dir={changed}"]) == 0
    cached = {k: v["cached"] for k, v in json.loads((changed / "report.json").read_text())["stages"].items()}
    assert cached == {"collect": True, "train": True, "eval_base": True, "eval_planner": True, "rl": True,
                      "distill": False, "export": False, "eval_artifact": False}

    # a stage interrupted halfway (no manifest) is not trusted: it runs again
    (again / "eval_artifact" / "manifest.json").unlink()
    subset = tmp_path / "subset"
    assert cli.main(["pipeline", *TINY, f"store={store}", "stages=[eval_artifact]", f"hydra.run.dir={subset}"]) == 0
    assert json.loads((subset / "report.json").read_text())["stages"]["eval_artifact"]["cached"] is False


def test_bad_input_stops_before_any_stage(tmp_path, capsys):
    store = tmp_path / "store"
    assert cli.main(["pipeline", 'train.overrides=["trainer.max_stepz=5"]', f"store={store}",
                     f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    assert "max_stepz" in one_error_line(capsys)
    assert cli.main(["pipeline", "launcher=slurmish", f"store={store}", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    assert "submitit_slurm" in one_error_line(capsys)
    assert cli.main(["pipeline", "stages=[rl,fly]", f"store={store}", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    assert "fly" in one_error_line(capsys)
    assert not store.exists()


def test_the_slurm_launcher_composes_for_fanned_out_stages(capsys):
    """What the pipeline passes to a fanned-out stage composes with the SLURM launcher plugin."""
    assert cli.main(["rl", "base=none", "robot=diffdrive", "hydra/launcher=submitit_slurm",
                     "hydra.launcher.partition=gpu", "--cfg", "hydra"]) == 0
    out = capsys.readouterr().out
    assert "submitit_slurm" in out and "partition: gpu" in out
