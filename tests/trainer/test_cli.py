"""The `train` and `sample` commands: progress, one-line summary, one-line errors (exit 2)."""

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from trainer.cli import register

app = typer.Typer()
register(app)
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_dir(export_dir: Path, cache_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "model"
    result = run(
        "train",
        "--data",
        export_dir,
        "--out",
        out,
        "--preset",
        "tiny",
        "--max-steps",
        "6",
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--vocab-size",
        "512",
        "--cache-dir",
        cache_dir,
        "--eval-every",
        "3",
        "--log-every",
        "2",
        "--device",
        "cpu",
        "--threads",
        "1",
    )
    assert result.exit_code == 0, result.output
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith("trained tiny (") and "6 steps, 768 tokens" in summary[0]
    assert "bits/byte" in summary[0] and str(out) in summary[0]
    return out


def test_sample_prints_n_continuations(model_dir: Path) -> None:
    result = run(
        "sample",
        "--model",
        model_dir,
        "--prompt",
        "Once upon a time",
        "--max-new-tokens",
        "5",
        "--n",
        "2",
        "--seed",
        "1",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    samples = result.stdout.split("-" * 40)
    assert len(samples) == 2 and all(s.strip().startswith("Once upon a time") for s in samples)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "giant"], "error: unknown preset 'giant'; valid presets: 1M, 3M"),
        (["--seq-len", "4096"], "error: seq_len 4096 is longer than the model's 512 positions"),
        (["--format", "chat"], "error: --format must be plain or instruct"),
        (["--compile-mode", "reduce-overhead"], "error: --compile-mode must be default or tuned"),
        (["--residual-dtype", "fp16"], "error: --residual-dtype must be auto, fp32 or bf16"),
        (
            ["--residual-dtype", "bf16", "--device", "cpu"],
            "error: residual_dtype bf16 needs a bf16 run (CUDA, bf16 on)",
        ),
        (["--device", "gpu"], "error: unknown device 'gpu'; use auto, cpu, cuda or cuda:N"),
    ],
)
def test_train_errors_are_one_line(export_dir, tmp_path, args, message) -> None:
    result = run("train", "--data", export_dir, "--out", tmp_path / "m", "--preset", "tiny", *args)
    assert result.exit_code == 2
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0]
    assert result.stderr.startswith(message)


def test_not_an_export_and_not_a_model(tmp_path: Path) -> None:
    result = run("train", "--data", tmp_path, "--out", tmp_path / "m", "--preset", "tiny")
    assert result.exit_code == 1  # the run failed; the command line itself was fine
    assert (
        result.stderr.strip()
        == f"error: {tmp_path} is not an export directory (no dataset_dict.json, "
        "nor train.txt and validation.txt)"
    )
    result = run("sample", "--model", tmp_path)
    assert result.exit_code == 1 and "is not a model directory" in result.stderr


def test_checkpoint_from_another_config(export_dir, cache_dir, model_dir) -> None:
    result = run(
        "train",
        "--data",
        export_dir,
        "--out",
        model_dir,
        "--preset",
        "tiny",
        "--max-steps",
        "8",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--vocab-size",
        "512",
        "--cache-dir",
        cache_dir,
        "--device",
        "cpu",
    )
    assert result.exit_code == 1
    assert "is from another config (seq_len 32 != 16)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_presets_lists_counts() -> None:
    result = run("train-presets", "--vocab-size", "50257")
    assert result.exit_code == 0
    line = next(x for x in result.stdout.splitlines() if x.startswith("33M "))
    assert "67.33M" in line and "28.34M" in line  # 512 positions, not the release's 2048


def test_empty_split_is_one_line_error(tmp_path: Path) -> None:
    from tests.trainer.conftest import make_export

    export = make_export(tmp_path / "e", n_train=10, empty="validation")
    result = run("train", "--data", export, "--out", tmp_path / "m", "--preset", "tiny")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: export {export}: split 'validation' is empty"


def test_presets_default_to_the_vocabulary_their_names_assume() -> None:
    result = run("train-presets")
    assert result.exit_code == 0
    line = next(x for x in result.stdout.splitlines() if x.startswith("33M "))
    assert "10,000" in line and "36.42M" in line
    llama = next(x for x in result.stdout.splitlines() if x.startswith("llama-15M "))
    assert "32,000" in llama and "15.19M" in llama


def test_sample_prompt_follows_the_story_separator(model_dir: Path, monkeypatch) -> None:
    # Training puts <|endoftext|> before every story and the grader (grader.generation._encode)
    # before every beginning: sampling conditions the same way.
    from transformers import AutoTokenizer, GenerationMixin

    from trainer.sample import generate

    seen = []
    real = GenerationMixin.generate

    def spy(self, *args, **kwargs):
        seen.append(kwargs["input_ids"][0].tolist())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = generate(model_dir, "Once upon a time", max_new_tokens=3, seed=0, device="cpu")
    prompt_ids = tok("Once upon a time", add_special_tokens=False)["input_ids"]
    assert seen[0] == [tok.eos_token_id, *prompt_ids]
    assert texts[0].startswith("Once upon a time")
    generate(model_dir, "", max_new_tokens=3, seed=0, device="cpu")
    assert seen[1] == [tok.eos_token_id]  # an empty prompt starts a story


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--prompt", ""], 0, ""),  # a story from its start, not a reshape traceback
        (["--top-k", "-3"], 2, "error: top_k must be >= 0 (0 disables it), not -3"),
        (["--temperature", "0"], 2, "error: temperature must be > 0, not 0.0"),
        (["--n", "0"], 2, "error: n and max_new_tokens must be >= 1"),
    ],
)
def test_sample_options(model_dir: Path, args, code, message) -> None:
    result = run("sample", "--model", model_dir, "--device", "cpu", "--max-new-tokens", "4", *args)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(message) and "Traceback" not in result.output
    if code:
        assert len(result.stderr.strip().splitlines()) == 1


def test_ctrl_c_line_names_the_checkpoint_it_saved(export_dir, cache_dir, tmp_path, monkeypatch):
    import trainer.train

    real = trainer.train.train

    def ctrl_c_at_step_3(cfg, *, on_step):
        def hook(info):
            on_step(info)
            if info.step == 3:
                raise KeyboardInterrupt

        return real(cfg, on_step=hook)

    monkeypatch.setattr(trainer.train, "train", ctrl_c_at_step_3)
    out = tmp_path / "m"
    args = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "4", "--vocab-size", "512"]
    result = run("train", "--data", export_dir, "--out", out, "--cache-dir", cache_dir, *args)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: interrupted at step 3; run the same command again to resume from "
        f"{out / 'checkpoints' / 'step-3'}"
    )


@pytest.mark.parametrize("layout", ["dataset", "release text files"])
def test_rejected_stories_are_counted_in_the_note_and_training_json(
    cache_dir, tmp_path, layout
) -> None:
    import json

    from tests.trainer.conftest import make_export
    from tests.trainer.release_files import make_text_export

    # The dataset's `accepted` column, or the *.rejected.json lists beside the text files.
    make = make_export if layout == "dataset" else make_text_export
    export = make(tmp_path / "e", n_train=60, n_valid=10, rejected=(0, 1, 2, 65))
    args = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "4", "--vocab-size", "512"]
    args += ["--max-steps", "2", "--cache-dir", cache_dir, "--device", "cpu"]
    result = run("train", "--data", export, "--out", tmp_path / "m", *args)
    assert result.exit_code == 0, result.output
    note = "left out 4 rejected stories of the export (train 3, validation 1); --include-rejected"
    assert f"note: {note}" in result.stderr
    info = json.loads((tmp_path / "m" / "training.json").read_text())
    assert info["rejected_stories"] == {"train": 3, "validation": 1}
    assert info["rejected_stories_included"] is False
    assert (info["train_stories"], info["validation_stories"]) == (57, 9)
    assert (
        "| rejected stories | train 3, validation 1 (left out) |"
        in (tmp_path / "m" / "README.md").read_text()
    )
    result = run("train", "--data", export, "--out", tmp_path / "all", "--include-rejected", *args)
    assert result.exit_code == 0, result.output
    assert "note: trained on 4 rejected stories of the export" in result.stderr
    info = json.loads((tmp_path / "all" / "training.json").read_text())
    assert info["rejected_stories_included"] is True
    assert (info["train_stories"], info["validation_stories"]) == (60, 10)
