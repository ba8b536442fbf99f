"""Option values that cannot work: one line and exit 2 from the CLI, OptionError from the API,
both before any data is read."""

from dataclasses import replace
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from trainer.config import OptionError, TrainConfig, TrainerError, residual_stream
from trainer.train import train

app = typer.Typer()
runner = CliRunner()


@app.callback()
def _group() -> None:
    """Commands under test."""


def _app() -> typer.Typer:
    from trainer.cli import register

    register(app)
    return app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log-every", "0"], "error: log_every must be a whole number >= 1, not 0"),
        (["--eval-every", "0"], "error: eval_every must be a whole number >= 1, not 0"),
        (["--checkpoint-every", "0"], "error: checkpoint_every must be a whole number >= 1"),
        (["--lr", "-1"], "error: lr must be > 0, not -1.0"),
        (["--lr", "nan"], "error: lr must be > 0, not nan"),
        (["--threads", "-1"], "error: threads must be a whole number >= 1, not -1"),
        (["--batch-size", "0"], "error: batch_size must be a whole number >= 1, not 0"),
        (["--grad-accum", "0"], "error: grad_accum must be a whole number >= 1, not 0"),
        (["--max-steps", "0"], "error: max_steps must be a whole number >= 1, not 0"),
        (["--seq-len", "0"], "error: seq_len must be a whole number >= 1, not 0"),
        (["--vocab-size", "100"], "error: vocab_size 100 is too small; byte-level BPE needs"),
        (["--tokens", "-5"], "error: tokens must be a whole number >= 1, not -5"),
        (["--tokens", "0"], "error: tokens must be a whole number >= 1, not 0"),
        (["--final-eval-tokens", "-10"], "error: final_eval_tokens must be a whole number >= 1"),
        (["--warmup-steps", "-1"], "error: warmup_steps must be a whole number >= 0, not -1"),
        (["--time-limit-s", "-1"], "error: time_limit_s must be >= 0, not -1.0"),
    ],
)
def test_bad_values_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    # --data points nowhere: the option must be refused before the data is looked at.
    result = runner.invoke(
        _app(),
        ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "m"), *args],
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_out_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    for out, code, message in [
        (tmp_path / "file", 2, f"error: out {tmp_path / 'file'} is a file, not a model directory"),
        (tmp_path / "file" / "m", 1, f"error: cannot create out directory {tmp_path / 'file'}"),
    ]:
        result = runner.invoke(
            _app(),
            ["train", "--data", str(tmp_path), "--out", str(out), "--device", "cpu"],
        )
        assert result.exit_code == code, result.output
        assert result.stderr.startswith(message)
        assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "file").read_text() == "not a directory"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("log_every", 0, "log_every must be a whole number >= 1, not 0"),
        ("tokens", 0, "tokens must be a whole number >= 1, not 0"),
        ("eval_tokens", -1, "eval_tokens must be a whole number >= 1, not -1"),
        ("lr", float("inf"), "lr must be > 0, not inf"),
        ("beta2", 1.0, r"beta2 must be in \[0, 1\), not 1.0"),
        ("min_lr_ratio", 2.0, "min_lr_ratio must be between 0 and 1, not 2.0"),
        ("keep_checkpoints", 0, "keep_checkpoints must be a whole number >= 1, not 0"),
        ("schedule", "linear", "schedule must be cosine or constant, not 'linear'"),
        ("format", "chat", "format must be plain or instruct, not 'chat'"),
        ("local_attention", "ring", "local_attention must be auto, flash, flex or sdpa"),
        ("out", "", "out must name the model directory to write"),
    ],
)
def test_python_api_checks_the_same_values(tmp_path: Path, field, value, message) -> None:
    cfg = TrainConfig(data=str(tmp_path / "none"), out=str(tmp_path / "m"), preset="tiny")
    with pytest.raises(OptionError, match=message):
        train(replace(cfg, **{field: value}))
    assert not (tmp_path / "m").exists()


def test_token_budget_is_used_when_given(export_dir, cache_dir, tmp_path: Path) -> None:
    cfg = TrainConfig(
        data=str(export_dir),
        out=str(tmp_path / "m"),
        preset="tiny",
        vocab_size=512,
        seq_len=64,
        batch_size=4,
        max_steps=50,
        tokens=2 * 4 * 64,
        eval_tokens=512,
        final_eval_tokens=512,
        cache_dir=str(cache_dir),
        device="cpu",
    )
    assert train(cfg).steps == 2  # the budget, not --max-steps
    with pytest.raises(TrainerError):  # a TrainerError the CLI maps to exit 2
        train(replace(cfg, final_eval_tokens=-10))


@pytest.mark.parametrize(
    ("overrides", "arch", "cuda", "stream"),
    [
        ({}, "gpt_neo", True, "bf16"),  # the default on a GPU: measured 1.07x, same loss
        ({}, "gpt_neo", False, "fp32"),  # no bf16 autocast on a CPU
        ({"bf16": False}, "gpt_neo", True, "fp32"),  # an fp32 (TF32) run keeps fp32
        ({"fast_attention": False}, "gpt_neo", True, "fp32"),  # transformers' own forward
        ({}, "llama", True, "fp32"),  # the stream is the GPT-Neo fast path's
        ({"residual_dtype": "fp32"}, "gpt_neo", True, "fp32"),  # the off switch
        ({"residual_dtype": "bf16"}, "gpt_neo", True, "bf16"),
    ],
)
def test_auto_residual_stream_is_bf16_only_where_it_applies(
    tmp_path: Path, overrides: dict, arch: str, cuda: bool, stream: str
) -> None:
    cfg = TrainConfig(data=str(tmp_path), out=str(tmp_path / "m"), **overrides)
    assert residual_stream(cfg, arch=arch, cuda=cuda) == stream
