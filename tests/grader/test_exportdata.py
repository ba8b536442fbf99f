"""Text-file exports (the trainer's other input layout) read by the grader."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from grader.exportdata import ExportDirError, column, has_column, load_export
from tests.grader.conftest import STORIES
from tinystories.cli import app


def make_text_export(path: Path, train: str = "train.txt", valid: str = "validation.txt") -> Path:
    """The conftest export's stories (train 0-8, validation 9-11) in release format."""
    path.mkdir(parents=True, exist_ok=True)
    (path / train).write_text("\n<|endoftext|>\n".join(STORIES[:9]) + "\n", encoding="utf-8")
    (path / valid).write_text("<|endoftext|>".join(STORIES[9:]), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("train", "valid"),
    [
        ("train.txt", "validation.txt"),
        ("train.txt", "valid.txt"),
        ("TinyStories-train.txt", "TinyStories-valid.txt"),  # the release's own names
    ],
)
def test_text_export_layouts_the_trainer_accepts(tmp_path, train, valid):
    export = load_export(make_text_export(tmp_path / "exp", train, valid))
    assert column(export, "validation", "text") == STORIES[9:]
    assert column(export, "validation", "text", 2) == STORIES[9:11]
    assert column(export, "train", "text") == STORIES[:9]
    assert not has_column(export, "validation", "instruct_text")
    with pytest.raises(ExportDirError, match="no 'instruct_text' column"):
        column(export, "validation", "instruct_text")


def test_text_export_errors_are_one_clear_message(tmp_path):
    only_train = tmp_path / "only-train"
    only_train.mkdir()
    (only_train / "train.txt").write_text(STORIES[0])
    with pytest.raises(ExportDirError) as err:
        load_export(only_train)
    assert str(err.value).startswith(
        f"{only_train} is not an export directory (no dataset_dict.json, nor text files: "
        "train.txt + validation.txt or valid.txt, TinyStories-train.txt + TinyStories-valid.txt"
    )
    # Two releases' files side by side: the trainer refuses them, and so does the grader.
    both = make_text_export(tmp_path / "both")
    make_text_export(both, "TinyStories-train.txt", "TinyStories-valid.txt")
    with pytest.raises(ExportDirError, match="several text layouts"):
        load_export(both)
    latin = make_text_export(tmp_path / "latin")
    (latin / "validation.txt").write_bytes(b"A story.<|endoftext|>Caf\xe9 time.")
    with pytest.raises(ExportDirError, match=r"not UTF-8 text: byte 24 \(0xe9, in story 2\)"):
        column(load_export(latin), "validation", "text")
    empty = make_text_export(tmp_path / "empty")
    (empty / "validation.txt").write_text("<|endoftext|>\n")
    with pytest.raises(ExportDirError, match=r"validation\.txt holds no stories"):
        load_export(empty)
    with pytest.raises(ExportDirError, match="does not exist"):
        load_export(tmp_path / "missing")


def test_grade_loss_on_text_export_equals_the_dataset_export(model_dir, export_dir, tmp_path):
    text = make_text_export(tmp_path / "exp")
    runner = CliRunner()
    base = ["grade-loss", "--model", str(model_dir), "--texts", "3", "--data"]
    res_text = runner.invoke(app, [*base, str(text)])
    res_arrow = runner.invoke(app, [*base, str(export_dir)])
    assert res_text.exit_code == 0, res_text.output
    assert res_arrow.exit_code == 0, res_arrow.output
    # The same three validation stories: the same loss, whichever layout holds them.
    assert "on validation[:3] (text)" in res_text.output
    assert res_text.output == res_arrow.output
    bad = runner.invoke(app, [*base, str(text), "--column", "instruct_text"])
    assert bad.exit_code == 1 and "no 'instruct_text' column" in bad.stderr


def test_grade_on_text_export(model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    text = make_text_export(tmp_path / "exp", "TinyStories-train.txt", "TinyStories-valid.txt")
    out = tmp_path / "r"
    args = ["grade", "--model", str(model_dir), "--out", str(out), "--data", str(text)]
    args += ["--suites", "none", "--no-checkpoints", "--k", "1", "--prompts", "1"]
    args += ["--max-new-tokens", "8", "--noise-sample", "0", "--memorization-n", "2"]
    res = CliRunner().invoke(app, [*args, "--loss-texts", "2"])
    assert res.exit_code == 0, res.output
    (entry,) = json.loads((out / "report.json").read_text())["models"]
    assert entry["loss"]["split"] == "validation[:2] (text)" and entry["loss"]["texts"] == 2
    assert entry["memorization"]["n"] == 2
    assert entry["memorization"]["train_stories_indexed"] == 9
    # Instruct records are not in a text export: asked for, refused before any judge call.
    on = CliRunner().invoke(app, [*args, "--instruct", "on"])
    assert on.exit_code == 2 and "holds plain stories" in on.stderr


def test_text_export_leaves_out_the_stories_listed_as_rejected(model_dir, tmp_path):
    from tests.trainer.release_files import sidecar, write_release_file

    accepted_train = [s for i, s in enumerate(STORIES[:9]) if i not in (1, 4)]
    listed = tmp_path / "listed"  # an --include-rejected export's text files
    write_release_file(listed / "TinyStories-train.txt", STORIES[:9], rejected=[1, 4])
    write_release_file(listed / "TinyStories-valid.txt", STORIES[9:], rejected=[1])
    export = load_export(listed)
    assert column(export, "validation", "text") == [STORIES[9], STORIES[11]]
    assert column(export, "train", "text") == accepted_train
    # Graded as the files of the accepted stories alone: what the trainer trains on.
    clean = tmp_path / "clean"
    write_release_file(clean / "TinyStories-train.txt", accepted_train)
    write_release_file(clean / "TinyStories-valid.txt", [STORIES[9], STORIES[11]])
    base = ["grade-loss", "--model", str(model_dir), "--texts", "3", "--data"]
    res_listed = CliRunner().invoke(app, [*base, str(listed)])
    res_clean = CliRunner().invoke(app, [*base, str(clean)])
    assert res_listed.exit_code == 0, res_listed.output
    assert "on validation[:2] (text)" in res_listed.output
    assert res_listed.output == res_clean.output

    valid_list = sidecar(listed / "TinyStories-valid.txt")
    valid_list.write_text(valid_list.read_text().replace('"stories": 3', '"stories": 4'))
    with pytest.raises(
        ExportDirError, match=f"^{re.escape(str(valid_list))} is for 4 stories but "
    ):
        load_export(listed)
    valid_list.unlink()
    with pytest.raises(ExportDirError, match=r"TinyStories-valid\.rejected\.json is missing"):
        load_export(listed)
    only_rejected = tmp_path / "only-rejected"
    write_release_file(only_rejected / "TinyStories-train.txt", STORIES[:9], rejected=[])
    write_release_file(only_rejected / "TinyStories-valid.txt", STORIES[9:], rejected=[0, 1, 2])
    with pytest.raises(ExportDirError, match=r"holds no accepted stories \(3 rejected\)"):
        load_export(only_rejected)


def test_dataset_export_leaves_out_rejected_stories(tmp_path):
    from tests.trainer.conftest import load_stories, make_export

    stories = load_stories()
    export = load_export(make_export(tmp_path / "e", n_train=20, n_valid=5, rejected=(0, 21)))
    assert column(export, "validation", "text") == [stories[20], *stories[22:25]]
    assert column(export, "validation", "text", 2) == [stories[20], stories[22]]
    assert column(export, "train", "text") == stories[1:20]
