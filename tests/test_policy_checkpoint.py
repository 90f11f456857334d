"""Policy checkpoints round-trip bit-exactly; foreign, corrupt and mismatched inputs give one clear PolicyError."""

import json

import numpy as np
import pytest
import torch
import yaml
from test_policy_nets import DA, DS, LANG, TASKS, small_spec

from policies import Policy, PolicyError
from policies.normalizer import Normalizer


def fitted_policy(net="mode", process="edm") -> Policy:
    torch.manual_seed(0)
    policy = Policy(small_spec(net, process))
    rng = np.random.default_rng(0)
    stats = {k: {"min": -rng.random(d) - 1, "max": rng.random(d) + 1, "mean": rng.random(d), "std": rng.random(d) + .5}
             for k, d in (("state", DS), ("action", DA))}
    policy.normalizer.fit(stats)
    policy.set_language_table(rng.standard_normal((TASKS, LANG)))
    return policy


def obs(n=3):
    rng = np.random.default_rng(1)
    return {"state": rng.standard_normal((n, DS)).astype(np.float32),
            "task": np.eye(TASKS, dtype=np.float32)[np.arange(n) % TASKS]}


@pytest.mark.parametrize("net", ["dit", "mdt", "mode", "mlp"])
def test_save_load_round_trips_bit_exactly(tmp_path, net):
    policy = fitted_policy(net)
    policy.save_pretrained(tmp_path / "p")
    loaded = Policy.from_pretrained(tmp_path / "p")
    a, b = policy.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.spec == policy.spec and loaded.obs_spec == {"state": (DS,), "task": (TASKS,)}
    torch.manual_seed(5)
    first = policy.act(obs())
    torch.manual_seed(5)
    np.testing.assert_array_equal(first, loaded.act(obs()))
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["config.yaml", "model.safetensors"]


def test_saving_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    policy = fitted_policy()
    policy.save_pretrained(tmp_path / "p")
    policy.save_pretrained(tmp_path / "p")
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_checkpoint_of_another_kind_is_rejected(tmp_path):
    fitted_policy().save_pretrained(tmp_path / "p")
    cfg = yaml.safe_load((tmp_path / "p/config.yaml").read_text())
    cfg["format"] = "alloy-residual"
    (tmp_path / "p/config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(PolicyError, match="not an alloy diffusion-policy checkpoint"):
        Policy.from_pretrained(tmp_path / "p")


def test_expected_net_type_is_checked(tmp_path):
    fitted_policy("dit").save_pretrained(tmp_path / "p")
    with pytest.raises(PolicyError, match="holds a 'dit' policy but a 'mode' policy was expected"):
        Policy.from_pretrained(tmp_path / "p", expect_net="mode")


def test_weights_of_another_policy_type_are_rejected(tmp_path):
    fitted_policy("dit").save_pretrained(tmp_path / "dit")
    fitted_policy("mode").save_pretrained(tmp_path / "mode")
    (tmp_path / "mode/model.safetensors").replace(tmp_path / "dit/model.safetensors")
    with pytest.raises(PolicyError, match="holds a 'mode' policy but .* says 'dit'"):
        Policy.from_pretrained(tmp_path / "dit")


def test_weights_that_do_not_fit_the_config_are_rejected(tmp_path):
    fitted_policy("dit").save_pretrained(tmp_path / "p")
    cfg = yaml.safe_load((tmp_path / "p/config.yaml").read_text())
    cfg["policy"]["net"]["d_model"] = 64
    (tmp_path / "p/config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(PolicyError, match="do not match its config"):
        Policy.from_pretrained(tmp_path / "p")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "yaml"])
def test_corrupt_or_missing_files_are_rejected(tmp_path, damage):
    fitted_policy().save_pretrained(tmp_path / "p")
    weights = tmp_path / "p/model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage":
        weights.write_bytes(b"\x80\x04not a safetensors file" * 10)
    elif damage == "missing":
        weights.unlink()
    else:
        (tmp_path / "p/config.yaml").write_text("policy: [unclosed")
    with pytest.raises(PolicyError) as e:
        Policy.from_pretrained(tmp_path / "p")
    assert "\n" not in str(e.value)


def test_a_pickle_is_never_loaded(tmp_path):
    fitted_policy().save_pretrained(tmp_path / "p")
    torch.save({"evil": 1}, tmp_path / "p/model.safetensors")
    with pytest.raises(PolicyError, match="not a readable safetensors file"):
        Policy.from_pretrained(tmp_path / "p")


def test_safetensors_header_carries_the_spec(tmp_path):
    from safetensors import safe_open

    fitted_policy("mdt").save_pretrained(tmp_path / "p")
    with safe_open(str(tmp_path / "p/model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["net"] == "mdt" and json.loads(meta["spec"])["action_dim"] == DA


def test_act_validates_keys_shapes_and_nan():
    policy = fitted_policy()
    with pytest.raises(PolicyError, match="lacks key 'task'"):
        policy.act({"state": np.zeros((2, DS))})
    with pytest.raises(PolicyError, match=r"'state' has shape \(2, 4\) but the policy expects \(B, 5\)"):
        policy.act({"state": np.zeros((2, 4)), "task": np.zeros((2, TASKS))})
    with pytest.raises(PolicyError, match=r"'task' has shape \(3, 3\) but the policy expects \(2, 3\)"):
        policy.act({"state": np.zeros((2, DS)), "task": np.zeros((3, TASKS))})
    bad = obs(2)
    bad["state"][1, 2] = np.nan
    with pytest.raises(PolicyError, match="'state' contains NaN"):
        policy.act(bad)


def test_act_refuses_empty_batches_non_numeric_arrays_and_unknown_keys_naming_the_spec():
    policy = fitted_policy()
    spec = f"{{state: (B, {DS}), task: (B, {TASKS})}}"
    cases = [
        ({"state": np.zeros((0, DS)), "task": np.zeros((0, TASKS))}, "'state' is an empty batch"),  # was IndexError
        ({"state": np.full((2, DS), "a"), "task": obs(2)["task"]}, "'state' is not numeric (dtype <U1)"),  # ValueError
        ({"state": [[1.0, 2.0], [3.0]], "task": obs(2)["task"]}, "'state' is not an array"),
        ({**obs(2), "lidar": np.zeros((2, 8))}, "unexpected key(s) lidar"),  # was ignored silently
    ]
    for bad, words in cases:
        with pytest.raises(PolicyError) as e:
            policy.act(bad)
        message = str(e.value)
        assert words in message and spec in message and "\n" not in message, message
    assert policy.act({k: v.astype(np.float64) for k, v in obs(2).items()}).shape == (2, DA)  # any real dtype


def test_history_chunking_and_per_env_reset():
    policy = fitted_policy("dit", "ddim")
    o = obs(2)
    policy.act(o)
    hist = policy._history.clone()
    assert torch.equal(hist[:, 0], hist[:, 1])  # a fresh env repeats its first observation
    o2 = {k: v.copy() for k, v in o.items()}
    o2["state"] += 1
    policy.act(o2)
    assert torch.equal(policy._history[:, 0], hist[:, 1]) and not torch.equal(policy._history[:, 1], hist[:, 1])
    assert policy.scheme.cursor.tolist() == [2, 2]
    policy.reset(np.array([True, False]))
    o2["state"] += 1
    policy.act(o2)
    assert torch.equal(policy._history[0, 0], policy._history[0, 1])  # env 0 restarted its history
    assert not torch.equal(policy._history[1, 0], policy._history[1, 1])
    assert policy.scheme.cursor.tolist() == [1, 3]  # env 0 replanned, env 1 kept executing its chunk
    with pytest.raises(PolicyError, match="reset mask has 3 entries"):
        policy.reset(np.ones(3, bool))


def test_batch_that_does_not_match_the_policy_is_a_clear_error():
    from test_policy_nets import batch

    policy = fitted_policy()
    data = batch()
    data["obs"]["state"] = data["obs"]["state"][..., :3]
    with pytest.raises(PolicyError, match=r"dataset observation 'state' has shape \(16, 2, 3\) but the policy expects"):
        policy.compute_loss(data)


@pytest.mark.parametrize("mode", ["limits", "gaussian"])
def test_normalizer_round_trip(mode):
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.standard_normal((100, 4)) * [1, 10, 0, 3] + [0, 5, 2, -1])
    stats = {"a": {"min": x.min(0).values.numpy(), "max": x.max(0).values.numpy(), "mean": x.mean(0).numpy(),
                   "std": x.std(0).numpy()}}
    norm = Normalizer({"a": 4}, mode).double()
    norm.fit(stats)
    y = norm.normalize("a", x)
    if mode == "limits":
        assert y.min() >= -1 - 1e-12 and y.max() <= 1 + 1e-12
    assert torch.allclose(y[:, 2], torch.zeros(100, dtype=torch.float64))  # a constant column is centred, not divided
    torch.testing.assert_close(norm.unnormalize("a", y), x, rtol=0, atol=1e-12)
    with pytest.raises(PolicyError, match="lack key"):
        norm.fit({})
