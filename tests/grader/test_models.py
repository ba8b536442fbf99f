"""Model directories: the trained context, weight hashes for caching."""

from __future__ import annotations

import json
from pathlib import Path
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


def test_unique_names_tell_dirs_with_the_same_name_apart(tmp_path, monkeypatch):
    from grader.models import unique_names

    monkeypatch.chdir(tmp_path)
    P = Path
    assert unique_names([P("d1/model"), P("d2/model")]) == ["d1-model", "d2-model"]
    assert unique_names([P("x/tiny"), P("y/other")]) == ["tiny", "other"]
    # The same dir twice, or equal parents too: numbered in command-line order.
    assert unique_names([P("a/m"), P("a/m")]) == ["m", "m-2"]
    assert unique_names([P("a/x/m"), P("b/x/m")]) == ["m", "m-2"]
    assert unique_names([P("d1/m"), P("d2/m"), P("d1-m")]) == ["d1-m", "d2-m", "d1-m-2"]
    assert unique_names([P(".")]) == [tmp_path.name]  # not "" (completions/.jsonl)


def test_grading_two_models_with_the_same_dir_name_keeps_both(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tinystories.cli import app

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    d1 = make_model_dir(tmp_path / "d1" / "model", seed=0)
    d2 = make_model_dir(tmp_path / "d2" / "model", seed=1)
    out = tmp_path / "r"
    args = ["grade", "--model", str(d1), "--model", str(d2), "--out", str(out)]
    args += ["--suites", "none", "--no-checkpoints", "--k", "1", "--prompts", "2"]
    res = CliRunner().invoke(app, [*args, "--max-new-tokens", "8", "--noise-sample", "0"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.stderr.split())  # rich wraps its log lines
    assert "is reported as d1-model" in said and "is reported as d2-model" in said
    report = json.loads((out / "report.json").read_text())
    assert [m["model"]["name"] for m in report["models"]] == ["d1-model", "d2-model"]
    assert [m["model"]["path"] for m in report["models"]] == [str(d1), str(d2)]
    for name in ("d1-model", "d2-model"):
        rows = (out / "completions" / f"{name}.jsonl").read_text().splitlines()
        assert len(rows) == 2
        assert (out / f"attention_{name}.png").is_file()
        assert (
            (out / f"neurons_{name}.md")
            .read_text()
            .startswith(f"# Top-activating tokens of MLP neurons: {name}")
        )
    assert not (out / "completions" / "model.jsonl").exists()
