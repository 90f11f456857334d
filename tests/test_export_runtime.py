"""`alloy export` and the torch-free runtime: the same noise gives the same actions as the torch policy for every
denoiser under every scheme (and for residual specialists), the runtime imports neither torch nor gymnasium, and
a tampered artifact is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alloy import cli
from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig
from policies.errors import PolicyError
from policies.export import export_policy, parity
from policies.runtime import Runtime

TO, TP, DA, DS, TASKS, LANG = 2, 8, 2, 5, 3, 6
REPO = Path(__file__).resolve().parents[1]


def small(net: str, process: str, scheme: str, language: bool = False, **scheme_kw) -> Policy:
    steps = {"ddpm": 4, "ddim": 4, "edm": 4, "gaussian": 1, "regression": 1}[process]
    torch.manual_seed(0)
    spec = PolicySpec(
        obs_dims={"state": DS, "task": TASKS} if language else {"state": DS}, action_dim=DA,
        net=NetConfig(name=net, d_model=32, n_heads=4, n_layers=1, n_enc_layers=1, mlp_hidden=32, obs_horizon=TO,
                      pred_horizon=TP),
        diffusion=DiffusionConfig(name=process, num_train_steps=20, num_inference_steps=steps),
        scheme=SchemeConfig(name=scheme, action_horizon=2, num_anchors=4, **scheme_kw),
        lang_dim=LANG if language else 0)
    policy = Policy(spec)
    policy.normalizer.fit({"state": {"min": -np.ones(DS), "max": np.ones(DS) * 2}, "task": {"min": np.zeros(TASKS),
                           "max": np.ones(TASKS)}, "action": {"min": -np.ones(DA) * 2, "max": np.ones(DA)}})
    if language:
        policy.set_language_table(torch.randn(TASKS, LANG))
    if scheme == "truncated":
        policy.scheme.set_anchors(torch.randn(4, TP, DA) * 0.5)
    return policy.eval()


def observations(steps: int, batch: int, language: bool = False, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        obs = {"state": rng.normal(size=(batch, DS)).astype(np.float32)}
        if language:
            obs["task"] = np.eye(TASKS, dtype=np.float32)[rng.integers(TASKS, size=batch)]
        out.append(obs)
    return out


SLOW = pytest.mark.slow  # the whole matrix, over 200 steps, is the slow test at the end of this file
CASES = [
    ("dit", "ddim", "chunk", {}),
    pytest.param("dit", "ddpm", "chunk", {}, marks=SLOW),  # ancestral noise at every step: the graph's noise inputs
    pytest.param("mdt", "edm", "chunk", {}, marks=SLOW),
    ("mode", "edm", "chunk", {}),  # expert cache engaged: fused experts in the graph
    ("dit", "ddim", "streaming", {}),
    pytest.param("mode", "edm", "streaming", {}, marks=SLOW),
    pytest.param("dit", "ddim", "truncated", {}, marks=SLOW),
    ("dit", "ddim", "truncated", {"select": "prior"}),
    ("mlp", "gaussian", "chunk", {}),
]


def _case_id(c) -> str:
    c = c.values if hasattr(c, "values") else c
    return f"{c[0]}-{c[1]}-{c[2]}{'-' + c[3]['select'] if c[3] else ''}"


@pytest.mark.parametrize("net, process, scheme, kw", CASES, ids=[_case_id(c) for c in CASES])
def test_artifact_acts_like_the_torch_policy_given_the_same_noise(tmp_path, net, process, scheme, kw):
    language = net == "mdt"
    policy = small(net, process, scheme, language=language, **kw)
    out = export_policy(policy, tmp_path / "artifact")
    diff = parity(policy, Runtime(out, seed=1), observations(7, 3, language))
    assert diff < 2e-5, diff
    spec = json.loads((out / "policy.json").read_text())
    assert spec["policy"]["scheme"] == scheme and spec["files"]


def test_per_env_reset_and_batch_sizes_match(tmp_path):
    """Resets of some envs and a batch size other than the exported one, draw for draw."""
    from policies import noise as noise_source

    policy = small("dit", "ddpm", "streaming")
    rt = Runtime(export_policy(policy, tmp_path / "a"), seed=3)
    draws: list[np.ndarray] = []
    original = rt._noise
    rt._noise = lambda g, b: (lambda f: (draws.extend(f[k] for k in sorted(f, key=lambda k: int(k[6:]))), f)[1])(
        original(g, b))
    policy.reset()
    for t, obs in enumerate(observations(9, 5, seed=4)):
        if t in (3, 6):
            mask = np.array([t == 3, False, True, False, t == 6])
            policy.reset(mask)
            rt.reset(mask)
        n = len(draws)
        a = rt.act(obs)
        with noise_source.given([torch.from_numpy(d) for d in draws[n:]]):
            b = policy.act(obs)
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_pt2_form_runs_the_same(tmp_path):
    policy = small("dit", "edm", "chunk")
    out = export_policy(policy, tmp_path / "a", formats=("onnx", "pt2"))
    obs = observations(4, 2)
    assert parity(policy, Runtime(out, seed=0, backend="pt2"), obs) < 1e-5
    program = torch.export.load(str(out / "plan.pt2"))  # loadable with torch alone
    assert program.module() is not None


def test_residual_specialist_exports_with_its_base(nav_base, tmp_path):
    from policies.residual import ResidualActor, ResidualPolicy, ResidualSpec
    from training.evaluation import load_policy

    base = load_policy(nav_base, "cpu")
    spec = ResidualSpec(obs_dims={"goal": 2, "lidar": 16}, action_dim=3, action_low=[-1.0] * 3,
                        action_high=[1.0] * 3, scale=0.5, hidden=[16])
    actor = ResidualActor(spec)
    with torch.no_grad():
        actor.mu.weight.normal_(0, 0.3)
    specialist = ResidualPolicy(base, actor, base_path=nav_base)
    out = export_policy(specialist, tmp_path / "spec")
    assert (out / "base" / "policy.json").is_file()
    rng = np.random.default_rng(0)
    obs = [{"goal": rng.normal(size=(3, 2)).astype(np.float32), "lidar": rng.uniform(0, 4, (3, 16)).astype(np.float32)}
           for _ in range(5)]
    reference = ResidualPolicy(load_policy(nav_base, "cpu"), actor, base_path=nav_base)
    assert parity(reference, Runtime(out, seed=2), obs) < 2e-5


def test_the_runtime_needs_neither_torch_nor_gymnasium(tmp_path):
    out = export_policy(small("dit", "ddim", "chunk"), tmp_path / "a")
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'gymnasium', 'mujoco'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np\n"
        "from policies.runtime import Runtime\n"
        f"rt = Runtime({str(out)!r}, seed=0)\n"
        "a = rt.act({'state': np.zeros((2, 5), np.float32)})\n"
        "assert a.shape == (2, 2) and np.isfinite(a).all()\n"
        "assert not any(m.split('.')[0] in ('torch', 'gymnasium') for m in sys.modules)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_tampered_or_foreign_artifacts_and_bad_observations_are_refused(tmp_path):
    out = export_policy(small("dit", "ddim", "chunk"), tmp_path / "a")
    rt = Runtime(out, seed=0)
    for bad, words in [({}, "lacks key"), ({"state": np.zeros((0, 5), np.float32)}, "empty"),
                       ({"state": np.array([["a"] * 5])}, "not numeric"),
                       ({"state": np.zeros((2, 5), np.float32), "extra": np.zeros((2, 1))}, "unexpected"),
                       ({"state": np.full((2, 5), np.nan, np.float32)}, "NaN"),
                       ({"state": np.zeros((2, 4), np.float32)}, "shape")]:
        with pytest.raises(PolicyError, match=words):
            rt.act(bad)
    graph = out / "plan.onnx"
    blob = bytearray(graph.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    graph.write_bytes(bytes(blob))
    with pytest.raises(PolicyError, match="modified after export"):
        Runtime(out)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "policy.json").write_text('{"format": "something-else"}')
    with pytest.raises(PolicyError, match="not an alloy artifact"):
        Runtime(tmp_path / "foreign")


def test_alloy_export_and_alloy_eval_of_the_artifact(nav_base, tmp_path):
    out = tmp_path / "artifact"
    assert cli.main(["export", f"policy={nav_base}", f"out={out}", "check_steps=3",
                     f"hydra.run.dir={tmp_path / 'run'}"]) == 0
    result = json.loads((tmp_path / "run" / "export.json").read_text())
    assert result["max_abs_action_diff_onnx"] < 2e-5
    eval_dir = tmp_path / "eval"
    assert cli.main(["eval", f"policy={out}", "env=alloy/Nav-Holonomic-v0", "episodes=2", "num_envs=1",
                     "progress=false", f"hydra.run.dir={eval_dir}"]) == 0
    assert json.loads((eval_dir / "report.json").read_text())["overall"]["episodes"] == 2
    assert cli.main(["export", f"policy={nav_base}", f"out={out}", f"hydra.run.dir={tmp_path / 'again'}"]) == 2


MATRIX = [(net, process, scheme) for net in ("dit", "mdt", "mode")
          for process, scheme in (("ddim", "chunk"), ("edm", "chunk"), ("ddim", "streaming"), ("edm", "streaming"),
                                  ("ddim", "truncated"), ("edm", "consistency"))]


@pytest.mark.slow
@pytest.mark.parametrize("net, process, scheme", MATRIX, ids=["-".join(c) for c in MATRIX])
def test_every_denoiser_and_scheme_matches_over_a_200_step_rollout_with_resets(tmp_path, net, process, scheme):
    """The export bar: exported actions equal the torch policy's within 1e-4 over 200 steps, per-env resets included
    (consistency: a one-step consistency student of an EDM chunk teacher, exported as a policy)."""
    from distill.consistency import make_student

    language = net == "mdt"
    if scheme == "consistency":
        policy = make_student(small(net, process, "chunk", language=language), steps=1).eval()
    else:
        policy = small(net, process, scheme, language=language)
    out = export_policy(policy, tmp_path / "artifact")
    resets = {50: np.array([True, False, False]), 120: np.array([False, True, True]), 121: np.ones(3, bool)}
    diff = parity(policy, Runtime(out, seed=5), observations(200, 3, language, seed=7), resets=resets)
    assert diff < 1e-4, diff
