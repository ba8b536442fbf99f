from pathlib import Path

import numpy as np
import pytest

from tests.trainer.conftest import make_export
from trainer.config import TrainerError
from trainer.data import WindowSampler, eval_windows, export_fingerprint, load_export, pretokenize
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
    assert first.n_bytes == sum(len(s.encode()) + 1 for s in ds["validation"]["text"])
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
    c = WindowSampler(tokens, seq_len=16, batch_size=4, seed=99)
    c.load_state_dict(state)
    assert all(bool((c.next() == e).all()) for e in expected)
    assert not bool((WindowSampler(tokens, seq_len=16, batch_size=4, seed=8).next() == first).all())


def test_eval_windows_are_fixed_and_non_overlapping() -> None:
    tokens = np.arange(100, dtype=np.uint16)
    w = eval_windows(tokens, seq_len=10, max_tokens=35)
    assert w.shape == (3, 11) and w[1, 0].item() == 10 and w[2, -1].item() == 30
    with pytest.raises(TrainerError, match="fewer than seq_len"):
        eval_windows(tokens[:5], seq_len=10, max_tokens=100)


def test_bad_exports(tmp_path: Path) -> None:
    with pytest.raises(TrainerError, match="not an export directory"):
        load_export(tmp_path)
    empty = make_export(tmp_path / "empty", n_train=20, empty="validation")
    with pytest.raises(TrainerError, match="'validation' is empty"):
        load_export(empty)
    with pytest.raises(TrainerError, match="unknown format"):
        load_export(empty, fmt="chat")
