"""Instruction embeddings: answered from the on-disk cache without the model; the model itself only when slow."""

import numpy as np
import pytest

from envs import language


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path))


def test_cached_embeddings_never_load_the_model(monkeypatch):
    rng = np.random.default_rng(0)
    vectors = {s: rng.standard_normal(384).astype(np.float32) for s in ("open the drawer", "close the door")}
    for s, v in vectors.items():
        language._write(language._cache_file(s, language.cache_dir()), v)

    def no_model():
        raise AssertionError("the encoder was loaded although every sentence is cached")

    monkeypatch.setattr(language, "_load_model", no_model)
    out = language.embed(["close the door", "", "open the drawer"])
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], vectors["close the door"])
    np.testing.assert_array_equal(out[1], np.zeros(384, np.float32))
    np.testing.assert_array_equal(language.embed("open the drawer"), vectors["open the drawer"])
    assert language.is_cached("open the drawer") and not language.is_cached("sweep the puck")


def test_damaged_cache_entry_is_recomputed(monkeypatch):
    path = language._cache_file("reach the goal position", language.cache_dir())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a numpy file")
    fresh = np.full(384, 1 / np.sqrt(384), dtype=np.float32)

    class FakeModel:
        def encode(self, texts, **_):
            return np.stack([fresh for _ in texts])

    monkeypatch.setattr(language, "_load_model", lambda: FakeModel())
    np.testing.assert_array_equal(language.embed("reach the goal position"), fresh)
    assert language.is_cached("reach the goal position")


def test_cache_lives_in_a_hidden_folder_under_the_data_root(tmp_path):
    assert language.cache_dir().is_relative_to(tmp_path)
    assert language.cache_dir().relative_to(tmp_path).parts[0].startswith(".")


@pytest.mark.slow
def test_packaged_encoder_embeds_instructions_offline():
    from envs.metaworld import INSTRUCTIONS

    out = language.embed([INSTRUCTIONS["drawer-open-v3"], INSTRUCTIONS["drawer-close-v3"], INSTRUCTIONS["soccer-v3"]])
    assert out.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Related instructions are closer than unrelated ones.
    assert out[0] @ out[1] > out[0] @ out[2]
    assert language.is_cached(INSTRUCTIONS["soccer-v3"])
