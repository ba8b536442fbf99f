"""Text-file exports with the lists of rejected stories beside them: left out unless asked,
counted as for a dataset export, cached apart, and a damaged list is one error line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.trainer.conftest import load_stories
from tests.trainer.release_files import make_text_export, sidecar, write_release_file
from trainer.cli import register
from trainer.config import TrainConfig, TrainerError
from trainer.data import drop_rejected, load_export
from trainer.prepare import prepare_data

app = typer.Typer()
register(app)
TINY = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "4", "--vocab-size", "512"]
TINY += ["--max-steps", "2", "--device", "cpu"]


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_listed_rejected_stories_are_left_out_unless_asked(tmp_path: Path) -> None:
    stories = load_stories()
    export = make_text_export(tmp_path / "e", rejected=(0, 1, 2, 45))
    ds, counts = drop_rejected(load_export(export), include=False)
    assert counts == {"train": 3, "validation": 1}
    assert ds["train"].texts == stories[3:40]
    assert ds["validation"].texts == stories[40:45] + stories[46:50]
    kept, again = drop_rejected(load_export(export), include=True)
    assert again == counts and kept["train"].texts == stories[:40]

    cfg = TrainConfig(data=str(export), out="x", vocab_size=300, cache_dir=str(tmp_path / "c"))
    data = prepare_data(cfg)
    assert data.rejected == {"train": 3, "validation": 1} and not data.rejected_included
    assert (data.train.n_docs, data.validation.n_docs) == (37, 9)
    everything = prepare_data(TrainConfig(**{**cfg.to_dict(), "include_rejected": True}))
    assert (everything.train.n_docs, everything.validation.n_docs) == (40, 10)
    assert everything.rejected == data.rejected and everything.rejected_included
    # Other stories, other token files: neither run reuses the other's cache entry.
    assert data.train_fingerprint != everything.train_fingerprint
    assert data.train.path != everything.train.path and not everything.train.cached
    # With every story in, the entry is the text file's own, as without a list beside it.
    train_sha = hashlib.sha256((export / "TinyStories-train.txt").read_bytes()).hexdigest()
    assert everything.train_fingerprint == train_sha[:16]


def test_a_changed_list_gets_its_own_token_cache(tmp_path: Path) -> None:
    export = make_text_export(tmp_path / "e", rejected=(0, 1, 2, 45))
    cfg = TrainConfig(data=str(export), out="x", vocab_size=300, cache_dir=str(tmp_path / "c"))
    first = prepare_data(cfg)
    stories = load_stories()
    write_release_file(export / "TinyStories-train.txt", stories[:40], rejected=[5])
    second = prepare_data(cfg)
    assert second.rejected == {"train": 1, "validation": 1}
    assert second.train.n_docs == 39 and not second.train.cached
    assert second.train_fingerprint != first.train_fingerprint
    assert prepare_data(cfg).train.cached  # and the new entry is reused


def _rewrite(path: Path, **changes: object) -> None:
    listing = json.loads(path.read_text())
    path.write_text(json.dumps({**listing, **changes}))


DAMAGED = {
    "cut short": (lambda p: p.write_text(p.read_text()[:30]), r"is damaged \(not JSON: "),
    "not a list": (lambda p: p.write_text("[0, 1]"), r"is damaged \(not a tinystories-rejected"),
    "index out of range": (
        lambda p: _rewrite(p, rejected=[0, 40]),
        r"is damaged \(story index 40 is not one of the file's 40 stories \(0-based\)\)",
    ),
    "negative index": (lambda p: _rewrite(p, rejected=[-1]), r"story index -1 is not one"),
    "listed twice": (lambda p: _rewrite(p, rejected=[2, 2]), r"a story is listed twice"),
    "count mismatch": (
        lambda p: _rewrite(p, stories=41),
        r"is for 41 stories but TinyStories-train\.txt holds 40; re-export the dataset$",
    ),
    "another file": (
        lambda p: _rewrite(p, sha256="0" * 64),
        r"is for another TinyStories-train\.txt \(its sha256 differs",
    ),
    "newer version": (lambda p: _rewrite(p, version=2), r"has version 2, not 1: update"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_list_is_one_error_line_naming_it(tmp_path: Path, case: str) -> None:
    damage, message = DAMAGED[case]
    export = make_text_export(tmp_path / "e", rejected=(0, 1, 2, 45))
    listing = sidecar(export / "TinyStories-train.txt")
    damage(listing)
    with pytest.raises(TrainerError, match=message):
        load_export(export)
    result = run("train", "--data", export, "--out", tmp_path / "m", *TINY)
    assert result.exit_code == 1  # damaged data, as a damaged split state or text file
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {listing} ")
    assert "Traceback" not in result.output


def test_a_list_beside_one_split_only_is_refused(tmp_path: Path) -> None:
    export = make_text_export(tmp_path / "e", rejected=(0, 1, 2, 45))
    sidecar(export / "TinyStories-valid.txt").unlink()
    with pytest.raises(TrainerError) as caught:
        load_export(export)
    assert str(caught.value) == (
        f"{sidecar(export / 'TinyStories-train.txt')} lists the rejected stories of "
        "TinyStories-train.txt, but TinyStories-valid.rejected.json is missing beside "
        "TinyStories-valid.txt; an export writes one for each text file: restore it or "
        "re-export the dataset"
    )


def test_a_split_of_rejected_stories_only_is_one_line(tmp_path: Path) -> None:
    export = make_text_export(tmp_path / "e", rejected=tuple(range(40, 50)))
    with pytest.raises(TrainerError, match=r"split 'validation' has no accepted stories \(10 "):
        drop_rejected(load_export(export), include=False)
    ds, counts = drop_rejected(load_export(export), include=True)
    assert counts == {"train": 0, "validation": 10} and ds["validation"].num_rows == 10


def test_instruct_files_have_their_own_lists(tmp_path: Path) -> None:
    texts = [f"Words: a\nStory: \n\nStory {i}." for i in range(6)]
    write_release_file(tmp_path / "TinyStoriesInstruct-train.txt", texts[:4], rejected=[1])
    write_release_file(tmp_path / "TinyStoriesInstruct-valid.txt", texts[4:], rejected=[])
    ds, counts = drop_rejected(load_export(tmp_path, fmt="instruct"), include=False)
    assert counts == {"train": 1, "validation": 0}
    assert ds["train"].texts == [texts[0], texts[2], texts[3]]
    assert ds["validation"].texts == texts[4:]
