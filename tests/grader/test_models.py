"""Model directories: the trained context, weight hashes for caching."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from grader.models import ModelDirError, load_model, trained_context, weights_hash
from tests.grader.conftest import make_model_dir


def test_context_is_the_trained_one_never_the_larger_position_table(tmp_path):
    path = make_model_dir(tmp_path / "m", context=256)
    info = json.loads((path / "training.json").read_text())
    info["context_length"] = 64  # an older trainer: 256 positions, trained at 64
    (path / "training.json").write_text(json.dumps(info))
    lm = load_model(path)
    assert lm.context_length == 64 and lm.context_source.startswith("training.json")
    from grader.generation import GenerationSettings, generate

    (out,) = generate(lm, ["Once upon a time " * 40], GenerationSettings(max_new_tokens=100))
    assert out.n_tokens <= 32  # capped to half the trained window, prompt cut to fit


def test_unknown_context_is_one_clear_error():
    with pytest.raises(ModelDirError, match="context the model was trained at is unknown"):
        trained_context(SimpleNamespace(), {})
    assert trained_context(SimpleNamespace(max_position_embeddings=512), {}) == (
        512,
        "config.json max_position_embeddings",
    )


def test_weights_hash_follows_the_weights(tmp_path):
    a = make_model_dir(tmp_path / "a", seed=0)
    b = make_model_dir(tmp_path / "b", seed=0)
    c = make_model_dir(tmp_path / "c", seed=1)
    assert weights_hash(a) == weights_hash(b) != weights_hash(c)


def test_new_tokens_fit_the_trained_context(loaded):
    from grader.generation import GenerationSettings, within_context

    assert within_context(loaded, GenerationSettings(max_new_tokens=1000)).max_new_tokens == 128
    assert within_context(loaded, GenerationSettings(max_new_tokens=64)).max_new_tokens == 64
