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
