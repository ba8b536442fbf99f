"""Bad option values: one error line, exit 2, before any model generates or judge is called."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tinystories.cli import app


@pytest.fixture
def no_judge_no_grading(monkeypatch):
    """A check that passes by mistake reaches these and fails the test loudly."""
    import grader.cli
    import grader.run

    def refuse(*args, **kwargs):
        raise AssertionError("reached a judge or grading despite a bad option")

    monkeypatch.setattr(grader.cli, "_judge_settings", refuse)
    monkeypatch.setattr(grader.run, "grade", refuse)
    monkeypatch.setattr(grader.run, "_grade_model", refuse)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


GRADE_CASES = [
    (["--data", "EXPORT", "--loss-texts", "-1"], "--loss-texts must be >= 1 (got -1)"),
    (["--data", "EXPORT", "--loss-texts", "0"], "--loss-texts must be >= 1 (got 0)"),
    (["--judge-max-tokens", "0"], "--judge-max-tokens must be >= 1 (got 0)"),
    (["--judge-rpm", "0"], "--judge-rpm must be >= 1 (got 0)"),
    (["--noise-sample", "-1"], "--noise-sample must be >= 0 (got -1)"),
    (["--memorization-n", "-1"], "--memorization-n must be >= 0 (got -1)"),
    (["--k", "0"], "--k must be >= 1 (got 0)"),
    (["--temperature", "-1"], "--temperature must be >= 0 (got -1)"),
    (["--temperature", "nan"], "--temperature must be >= 0 (got nan)"),
    (["--checkpoint-k", "0"], "--checkpoint-k must be >= 1 (got 0)"),
    (["--seed", "-1"], "--seed must be >= 0 (got -1)"),
    (["--out", "FILE"], "--out FILE is a file, not a directory"),
    (["--out", "FILE/sub"], "--out FILE/sub: FILE is a file, not a directory"),
]


@pytest.mark.parametrize(("extra", "message"), GRADE_CASES)
def test_grade_refuses_bad_options_before_any_work(
    model_dir, export_dir, tmp_path, no_judge_no_grading, extra, message
):
    file = tmp_path / "report.md"
    file.write_text("an earlier report")

    def fill(s: str) -> str:
        return s.replace("EXPORT", str(export_dir)).replace("FILE", str(file))

    args = ["grade", "--model", str(model_dir), "--out", str(tmp_path / "r"), "--prompts", "1"]
    res = CliRunner().invoke(app, [*args, *map(fill, extra)])
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == [f"error: {fill(message)}"]
    assert "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--context-length", "0"], "--context-length must be >= 1 (got 0)"),
        (["--context-length", "-5"], "--context-length must be >= 1 (got -5)"),
        (["--texts", "0"], "--texts must be >= 1 (got 0)"),
    ],
)
def test_grade_loss_refuses_bad_options(model_dir, export_dir, extra, message):
    args = ["grade-loss", "--model", str(model_dir), "--data", str(export_dir), *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == [f"error: {message}"]


def test_grade_loss_context_length_is_used(model_dir, export_dir):
    args = ["grade-loss", "--model", str(model_dir), "--data", str(export_dir), "--texts", "2"]
    res = CliRunner().invoke(app, [*args, "--context-length", "16"])
    assert res.exit_code == 0, res.output
    assert "context 16," in res.output


def test_grade_attention_makes_missing_dirs_and_refuses_a_dir_or_file(model_dir, tmp_path):
    base = ["grade-attention", "--model", str(model_dir), "--prompt", "Once upon a time"]
    png = tmp_path / "missing" / "dir" / "x.png"
    res = CliRunner().invoke(app, [*base, "--out", str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    for out, message in [
        (tmp_path / "missing", f"--out {tmp_path / 'missing'} is a directory; give a file name"),
        (png / "y.png", f"--out {png / 'y.png'}: {png} is a file, not a directory"),
    ]:
        bad = CliRunner().invoke(app, [*base, "--out", str(out)])
        assert bad.exit_code == 2, bad.output
        assert bad.stderr.splitlines() == [f"error: {message}"]


def test_grade_pairwise_refuses_a_negative_temperature(model_dir, tmp_path, no_judge_no_grading):
    args = ["grade-pairwise", "--model", str(model_dir), "--model", str(model_dir)]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "pw"), "--temperature", "-1"])
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == ["error: --temperature must be >= 0 (got -1)"]
