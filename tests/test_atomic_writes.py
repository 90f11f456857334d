"""Atomic writes and the one recovery rule: a write killed at any moment leaves the old or the new copy at the final
path, readers complete a rollback a killed writer left half-done, and dead writers' temp files and staging folders
are removed. The kills are real (`os._exit` in a subprocess at the chosen rename), the rest is built on disk."""

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from policies import Policy
from policies.atomic import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    recover_dir,
    writer_tag,
)
from training import checkpoint as ckpt
from training.datasets_io import Episode, list_datasets, read_episodes, write_dataset

TESTS = Path(__file__).resolve().parent

# Runs in a fresh interpreter before the test's code: `os.replace` exits the process (as a SIGKILL would, no cleanup)
# on the first call that `KILL(src, dst)` picks once `ARM()` was called.
PRELUDE = f"""
import os, sys
sys.path.insert(0, {str(TESTS)!r})
_real_replace, _armed = os.replace, [False]
def ARM():
    _armed[0] = True
def _replace(src, dst, *a, **k):
    if _armed[0] and KILL(os.fspath(src), os.fspath(dst)):
        os._exit(17)
    return _real_replace(src, dst, *a, **k)
os.replace = _replace
"""

SWAP_IN = "lambda src, dst: '.tmp-' in os.path.basename(src) and os.path.isdir(src)"  # 2nd rename of a dir swap
ANY = "lambda src, dst: True"  # the first rename: nothing renamed yet


def killed(kill: str, code: str, tmp_path: Path) -> None:
    """Run `code` in a subprocess that dies at the rename `kill` selects; the test fails if it does not die there."""
    env = {**os.environ, "ALLOY_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    script = PRELUDE + f"KILL = {kill}\n" + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 17, f"the writer was not killed where intended (rc {proc.returncode}):\n{proc.stderr}"


def leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))


# ---------------------------------------------------------------------------------------------------- helpers
def test_file_helpers_write_whole_files_with_the_usual_mode_and_no_temp_left(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "sub" / "b.md", "h\u00e9\n")
    atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1.5]})
    atomic_write_json(tmp_path / "c.json", {"b": 2})  # replaces
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub/b.md").read_bytes() == "h\u00e9\n".encode()
    assert (tmp_path / "c.json").read_text() == '{\n  "b": 2\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.json", "sub"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_a_failed_file_write_keeps_the_old_file(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "r.json", {"bad": object()})
    assert json.loads((tmp_path / "r.json").read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_killed_file_write_keeps_the_old_file_and_its_temp_is_removed_by_the_next_write(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"v": 1})
    killed(ANY, f"""
        from policies.atomic import atomic_write_json
        ARM()
        atomic_write_json({str(tmp_path / "r.json")!r}, {{"v": 2}})
    """, tmp_path)
    assert json.loads((tmp_path / "r.json").read_text()) == {"v": 1}
    assert len(leftovers(tmp_path, "r.json")) == 1  # the dead writer's temp file
    atomic_write_json(tmp_path / "r.json", {"v": 3})
    assert json.loads((tmp_path / "r.json").read_text()) == {"v": 3} and leftovers(tmp_path, "r.json") == []


def test_atomic_dir_takes_subfolders_and_fsyncs_files_folders_and_the_parent(tmp_path, monkeypatch):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name fsynced descriptors")
    synced, real = [], os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "export"
    with atomic_dir(out) as tmp:
        (tmp / "model.onnx").write_bytes(b"1")
        (tmp / "assets" / "meshes").mkdir(parents=True)
        (tmp / "assets" / "meshes" / "a.stl").write_bytes(b"2")
    assert (out / "assets/meshes/a.stl").read_bytes() == b"2" and (out / "model.onnx").read_bytes() == b"1"
    names = [Path(s).name for s in synced]
    assert "model.onnx" in names and "a.stl" in names  # every file
    assert "meshes" in names and "assets" in names  # every folder
    assert str(tmp_path) in synced  # the parent, after the renames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


# ---------------------------------------------------------------------------------------------------- policies
def test_policy_write_killed_between_the_renames_is_rolled_back_by_the_reader(tmp_path):
    from test_policy_checkpoint import fitted_policy

    p = tmp_path / "ckpts" / "last"
    killed(SWAP_IN, f"""
        import torch
        from test_policy_checkpoint import fitted_policy
        policy = fitted_policy("mlp")
        policy.save_pretrained({str(p)!r})
        with torch.no_grad():
            next(policy.parameters()).add_(1.0)
        ARM()
        policy.save_pretrained({str(p)!r})
    """, tmp_path)
    assert not p.exists() and (p.parent / ".last.old").is_dir()  # the crash state: `last` gone
    assert len(leftovers(p.parent, "last")) == 2  # .last.old and the dead writer's .last.tmp-*
    loaded = Policy.from_pretrained(p)
    first = fitted_policy("mlp")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), first.state_dict().values()))
    assert p.is_dir() and leftovers(p.parent, "last") == []  # rollback completed, temp removed


def test_recover_dir_makes_the_checkpoint_visible_to_existence_checks(tmp_path):
    from test_policy_checkpoint import fitted_policy

    from training.evaluation.policy_loader import load_policy

    p = tmp_path / "last"
    fitted_policy("mlp").save_pretrained(p)
    os.replace(p, tmp_path / ".last.old")  # a writer died between its two renames
    assert recover_dir(p) == p and p.is_dir()
    assert load_policy(str(p), device="cpu").action_dim == fitted_policy("mlp").action_dim
    assert leftovers(tmp_path, "last") == []


def test_a_policy_write_killed_before_its_renames_leaves_a_temp_that_the_next_reader_removes(tmp_path):
    p = tmp_path / "p"
    killed(ANY, f"""
        from test_policy_checkpoint import fitted_policy
        policy = fitted_policy("mlp")
        policy.save_pretrained({str(p)!r})
        ARM()
        policy.save_pretrained({str(p)!r})
    """, tmp_path)
    tmp = leftovers(tmp_path, "p")
    assert len(tmp) == 1 and tmp[0].startswith(".p.tmp-") and p.is_dir()
    Policy.from_pretrained(p)
    assert leftovers(tmp_path, "p") == []


def test_temp_dirs_of_live_writers_stay_and_untagged_old_ones_go(tmp_path):
    from test_policy_checkpoint import fitted_policy

    p = tmp_path / "p"
    fitted_policy("mlp").save_pretrained(p)
    mine = tmp_path / f".p.tmp-{writer_tag()}-abcd1234"  # this (live) process is writing it
    legacy = tmp_path / ".p.tmp-k2j4h5g6"  # older alloy's name, no writer recorded, older than `p`
    mine.mkdir()
    legacy.mkdir()
    past = time.time() - 3600
    os.utime(legacy, (past, past))
    recover_dir(p)
    assert mine.is_dir() and not legacy.exists()


# ---------------------------------------------------------------------------------------------------- resume
def test_checkpoint_killed_between_the_renames_resumes_from_the_previous_one(tmp_path):
    run = tmp_path / "run" / "checkpoints" / "last"
    killed(SWAP_IN, f"""
        import torch
        from test_policy_checkpoint import fitted_policy
        from training.checkpoint import save_checkpoint
        policy = fitted_policy("mlp")
        opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
        for step in (1, 2):
            if step == 2:
                ARM()
            save_checkpoint({str(run)!r}, policy, policy, opt, {{"step": step}}, {{"step": step}}, None)
    """, tmp_path)
    assert not run.exists() and (run.parent / ".last.old").is_dir()
    tensors, meta = ckpt.load_train_state(run)
    assert meta["step"] == 1 and "rng.torch" in tensors
    assert run.is_dir() and leftovers(run.parent, "last") == []


# ---------------------------------------------------------------------------------------------------- datasets
def _episodes(T: int, n: int = 2) -> list[Episode]:
    return [Episode(observations={"state": np.full((T + 1, 3), float(T), np.float32)},
                    actions=np.zeros((T, 2), np.float32), rewards=np.zeros(T),
                    terminations=np.r_[np.zeros(T - 1, bool), True], truncations=np.zeros(T, bool))
            for _ in range(n)]


SPACES = dict(observation_space=spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (3,), np.float32)}),
              action_space=spaces.Box(-1, 1, (2,), np.float32))


def test_dataset_overwrite_killed_between_the_renames_keeps_the_old_dataset(tmp_path):
    dataset_id = "test/kill/teacher-v0"
    killed("lambda src, dst: '/.staging/' in src", f"""
        import numpy as np
        from gymnasium import spaces
        from training.datasets_io import Episode, write_dataset
        def episodes(T):
            return [Episode(observations={{"state": np.full((T + 1, 3), float(T), np.float32)}},
                            actions=np.zeros((T, 2), np.float32), rewards=np.zeros(T),
                            terminations=np.r_[np.zeros(T - 1, bool), True], truncations=np.zeros(T, bool))
                    for _ in range(2)]
        sp = dict(observation_space=spaces.Dict({{"state": spaces.Box(-np.inf, np.inf, (3,), np.float32)}}),
                  action_space=spaces.Box(-1, 1, (2,), np.float32))
        write_dataset({dataset_id!r}, episodes(5), {{"suite": "test"}}, **sp)
        ARM()
        write_dataset({dataset_id!r}, episodes(7), {{"suite": "test"}}, overwrite=True, **sp)
    """, tmp_path)
    data = tmp_path / "data"
    folder = data / "test" / "kill"
    assert not (folder / "teacher-v0").exists() and (folder / ".teacher-v0.old").is_dir()  # old set aside only
    assert len(list((data / ".staging").iterdir())) == 1  # the killed writer's staging folder
    assert dataset_id in list_datasets()  # listing completes the rollback
    assert read_episodes(dataset_id).lengths.tolist() == [5, 5]  # the old dataset, whole
    assert leftovers(folder, "teacher-v0") == []
    write_dataset("test/other/teacher-v0", _episodes(3), {"suite": "test"}, **SPACES)
    assert list((data / ".staging").iterdir()) == []  # the dead writer's staging folder went with the next write
    write_dataset(dataset_id, _episodes(4), {"suite": "test"}, overwrite=True, **SPACES)
    assert read_episodes(dataset_id).lengths.tolist() == [4, 4] and leftovers(folder, "teacher-v0") == []


def test_dataset_reader_recovers_a_rollback_left_on_disk(tmp_path):
    dataset_id = "test/disk/teacher-v0"
    write_dataset(dataset_id, _episodes(6), {"suite": "test"}, **SPACES)
    folder = tmp_path / "data" / "test" / "disk"
    os.replace(folder / "teacher-v0", folder / ".teacher-v0.old")
    assert read_episodes(dataset_id).lengths.tolist() == [6, 6]
    assert (folder / "teacher-v0").is_dir() and leftovers(folder, "teacher-v0") == []


# ---------------------------------------------------------------------------------------------------- readers
def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_load_policy_rolls_back_a_checkpoint_left_as_old(tmp_path):
    from test_policy_checkpoint import fitted_policy

    from training.evaluation.policy_loader import load_policy

    p = tmp_path / "last"
    fitted_policy("mlp").save_pretrained(p)
    os.replace(p, tmp_path / ".last.old")  # a writer died between its two renames
    assert load_policy(str(p), device="cpu").action_dim == fitted_policy("mlp").action_dim  # was: does not exist
    assert p.is_dir() and leftovers(tmp_path, "last") == []


def test_alloy_eval_recovers_a_checkpoint_left_as_old(tmp_path, capsys):
    from alloy import cli
    from policies import DiffusionConfig, NetConfig, PolicySpec, SchemeConfig

    spec = PolicySpec(obs_dims={"state": 39}, action_dim=4,
                      net=NetConfig(name="mlp", language=False, pred_horizon=4, mlp_hidden=16, mlp_layers=1),
                      diffusion=DiffusionConfig(name="regression"), scheme=SchemeConfig(action_horizon=2))
    last = tmp_path / "run" / "checkpoints" / "last"
    Policy(spec).save_pretrained(last)
    (last.parent / f".last.tmp-{dead_writer_tag()}-x").mkdir()  # a dead writer's temp folder
    os.replace(last, last.parent / ".last.old")
    code = cli.main(["eval", f"policy={last}", "env=metaworld/reach-v3", "episodes=1", "num_envs=1",
                     "asynchronous=false", "max_episode_steps=3", "progress=false", "device=cpu",
                     f"hydra.run.dir={tmp_path / 'eval'}"])
    assert code == 0, capsys.readouterr().err  # was: "policy ... does not exist"
    assert json.loads((tmp_path / "eval/report.json").read_text())["overall"]["episodes"] == 1
    assert last.is_dir() and leftovers(last.parent, "last") == []


def dead_writer_tag() -> str:
    """A writer tag of this host naming a process that has exited."""
    return f"{writer_tag().rsplit('-', 1)[0]}-{_dead_pid()}"


def test_listing_datasets_removes_dead_writers_staging_folders(tmp_path):
    write_dataset("test/list/teacher-v0", _episodes(3), {"suite": "test"}, **SPACES)
    staging = tmp_path / "data" / ".staging"
    dead, alive = staging / f"{dead_writer_tag()}-abc", staging / f"{writer_tag()}-def"
    (dead / "test").mkdir(parents=True)
    alive.mkdir()
    assert list_datasets() == ["test/list/teacher-v0"]
    assert not dead.exists() and alive.is_dir()  # was: left behind until the next write_dataset
