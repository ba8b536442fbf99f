from pathlib import Path

import numpy as np
import pytest

from tests.trainer.conftest import make_export
from trainer.config import TrainerError
from trainer.data import (
    Prefetcher,
    WindowSampler,
    export_fingerprint,
    load_export,
    pretokenize,
)
from trainer.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    from tests.trainer.conftest import load_stories

    return train_tokenizer(load_stories(), vocab_size=512, out_dir=tmp_path_factory.mktemp("t"))


def test_pretokenize_joins_stories_with_eos_and_reuses_cache(export_dir, tok, tmp_path) -> None:
    ds = load_export(export_dir)
    key = f"{export_fingerprint(export_dir, ds, 'validation')}-text-x"
    first = pretokenize(ds["validation"], column="text", tokenizer=tok, cache_dir=tmp_path, key=key)
    assert not first.cached
    assert first.tokens.dtype == np.uint16
    assert first.n_docs == 30
    tokens = np.asarray(first.tokens)
    assert int((tokens == tok.eos_token_id).sum()) == 30 and tokens[-1] == tok.eos_token_id
    stories = tok.decode(tokens.tolist()).split(tok.eos_token)
    assert stories[:30] == list(ds["validation"]["text"])
    assert first.n_bytes == sum(len(s.encode()) for s in ds["validation"]["text"])  # text only
    mtime = first.path.stat().st_mtime_ns
    again = pretokenize(ds["validation"], column="text", tokenizer=tok, cache_dir=tmp_path, key=key)
    assert again.cached and again.path.stat().st_mtime_ns == mtime
    assert np.array_equal(np.asarray(again.tokens), tokens)


def test_instruct_format_tokenizes_instruct_text(export_dir, tok, tmp_path) -> None:
    ds = load_export(export_dir, fmt="instruct")
    tf = pretokenize(
        ds["validation"], column="instruct_text", tokenizer=tok, cache_dir=tmp_path, key="instruct"
    )
    text = tok.decode(np.asarray(tf.tokens).tolist())
    assert text.startswith("Words: ") and text.count("Story: \n\n") == 30


def test_fingerprint_prefers_export_manifest(tmp_path: Path) -> None:
    exp = make_export(tmp_path / "e", n_train=20, n_valid=5)
    ds = load_export(exp)
    assert export_fingerprint(exp, ds, "train") == ds["train"]._fingerprint
    (exp / "export.json").write_text('{"format_version": 1, "fingerprint": "abc123"}')
    assert export_fingerprint(exp, ds, "train") == "abc123-train"


def test_sampler_is_seeded_and_resumable() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    a = WindowSampler(tokens, seq_len=16, batch_size=4, seed=7)
    b = WindowSampler(tokens, seq_len=16, batch_size=4, seed=7)
    first = a.next()
    assert first.shape == (4, 17) and bool((first[:, 1:] - first[:, :-1] == 1).all())
    assert bool((b.next() == first).all())
    state = a.state_dict()
    expected = [a.next() for _ in range(3)]
    c = WindowSampler(tokens, seq_len=16, batch_size=4, seed=7)  # the seed is config
    c.load_state_dict(state)
    assert all(bool((c.next() == e).all()) for e in expected)
    assert not bool((WindowSampler(tokens, seq_len=16, batch_size=4, seed=8).next() == first).all())


def test_prefetcher_yields_the_samplers_batches_and_its_resume_point() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    plain = WindowSampler(tokens, seq_len=16, batch_size=4, seed=7)
    expected = [plain.next() for _ in range(6)]
    ahead = WindowSampler(tokens, seq_len=16, batch_size=4, seed=7)
    pre = Prefetcher(ahead, depth=3, pin=False)
    try:
        got = [pre.next() for _ in range(4)]
        assert ahead.state_dict() == {"index": 4}  # consumed, not made: the thread runs ahead
    finally:
        pre.close()
    assert all(bool((g == e).all()) for g, e in zip(got, expected, strict=False))
    again = WindowSampler(tokens, seq_len=16, batch_size=4, seed=7)
    again.load_state_dict(ahead.state_dict())
    assert bool((again.next() == expected[4]).all())
    with pytest.raises(TrainerError, match="older trainer"):
        again.load_state_dict({"bit_generator": {}})


def test_text_file_export_needs_no_datasets(tmp_path: Path) -> None:
    from tests.trainer.conftest import load_stories

    stories = load_stories()
    (tmp_path / "train.txt").write_text("<|endoftext|>".join(stories[:20]))
    (tmp_path / "valid.txt").write_text("\n<|endoftext|>\n".join(stories[20:25]) + "<|endoftext|>")
    ds = load_export(tmp_path)
    assert ds["train"].num_rows == 20 and ds["validation"].texts == stories[20:25]
    fp = export_fingerprint(tmp_path, ds, "train")
    assert fp == ds["train"]._fingerprint and len(fp) == 16
    with pytest.raises(TrainerError, match="use --format plain"):
        load_export(tmp_path, fmt="instruct")


def test_bad_exports(tmp_path: Path) -> None:
    with pytest.raises(TrainerError, match=r"not an export directory.*train\.txt"):
        load_export(tmp_path)
    empty = make_export(tmp_path / "empty", n_train=20, empty="validation")
    with pytest.raises(TrainerError, match="'validation' is empty"):
        load_export(empty)
    with pytest.raises(TrainerError, match="unknown format"):
        load_export(empty, fmt="chat")


def test_release_file_names_are_accepted(tmp_path: Path) -> None:
    from tests.trainer.conftest import load_stories

    stories = load_stories()
    release = tmp_path / "export" / "tinystories"  # what an export writes, as the release names
    release.mkdir(parents=True)
    (release / "TinyStories-train.txt").write_text("\n<|endoftext|>\n".join(stories[:20]))
    (release / "TinyStories-valid.txt").write_text("\n<|endoftext|>\n".join(stories[20:25]))
    ds = load_export(release)
    assert ds["train"].num_rows == 20 and ds["validation"].texts == stories[20:25]
    (release / "TinyStoriesInstruct-train.txt").write_text("Story: a<|endoftext|>Story: b")
    (release / "TinyStoriesInstruct-valid.txt").write_text("Story: c")
    instruct = load_export(release, fmt="instruct")
    assert instruct["train"].texts == ["Story: a", "Story: b"]
    (release / "train.txt").write_text("a")
    (release / "valid.txt").write_text("b")
    with pytest.raises(TrainerError, match=r"several text layouts \(train.txt \+ valid.txt and"):
        load_export(release)


def test_text_that_is_not_utf8_is_named_by_file_byte_and_story(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("One story.<|endoftext|>Two.")
    bad = b"First.<|endoftext|>Second.<|endoftext|>Th\xffird."
    (tmp_path / "validation.txt").write_bytes(bad)
    at = bad.index(b"\xff")
    with pytest.raises(TrainerError) as caught:
        load_export(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'validation.txt'} is not UTF-8 text: byte {at} (0xff, in story 3); "
        "fix or re-export the file"
    )


def test_damaged_split_state_is_one_line(tmp_path: Path) -> None:
    export = make_export(tmp_path / "e", n_train=20, n_valid=5)
    (export / "train" / "state.json").write_text('{"_data_files": [')  # cut off mid-write
    with pytest.raises(TrainerError, match=r"train/state.json is damaged \(.*\); re-export"):
        load_export(export)


def test_damaged_token_cache_is_rebuilt(export_dir, tok, tmp_path, caplog) -> None:
    ds = load_export(export_dir)
    args = {"column": "text", "tokenizer": tok, "cache_dir": tmp_path, "key": "k"}
    first = pretokenize(ds["validation"], **args)
    expected = np.asarray(first.tokens).copy()
    with first.path.open("r+b") as fh:  # a copy cut short: the size no longer matches
        fh.truncate(10)
    with caplog.at_level("WARNING", logger="trainer.data"):
        again = pretokenize(ds["validation"], **args)
    assert "is damaged (10 bytes," in caplog.text
    assert not again.cached and np.array_equal(np.asarray(again.tokens), expected)
    meta = first.path.with_suffix(".json")
    meta.write_text(meta.read_text()[:7])
    third = pretokenize(ds["validation"], **args)
    assert not third.cached and np.array_equal(np.asarray(third.tokens), expected)
    assert pretokenize(ds["validation"], **args).cached  # and the rebuilt entry is reused


def test_rejected_stories_are_left_out_unless_asked(tmp_path: Path) -> None:
    from trainer.config import TrainConfig
    from trainer.prepare import prepare_data

    export = make_export(tmp_path / "e", n_train=40, n_valid=10, rejected=(0, 1, 2, 45))
    (export / "export.json").write_text('{"fingerprint": "f1"}')
    before = sorted(p.relative_to(export) for p in export.rglob("*"))
    cfg = TrainConfig(data=str(export), out="x", vocab_size=300, cache_dir=str(tmp_path / "c"))
    data = prepare_data(cfg)
    assert data.rejected == {"train": 3, "validation": 1} and not data.rejected_included
    assert (data.train.n_docs, data.validation.n_docs) == (37, 9)
    assert data.train_fingerprint == "f1-train-accepted"  # not the whole export's cache entry
    everything = prepare_data(TrainConfig(**{**cfg.to_dict(), "include_rejected": True}))
    assert (everything.train.n_docs, everything.validation.n_docs) == (40, 10)
    assert everything.rejected == data.rejected and everything.rejected_included
    assert sorted(p.relative_to(export) for p in export.rglob("*")) == before  # nothing written
