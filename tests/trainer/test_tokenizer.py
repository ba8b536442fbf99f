from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tests.trainer.conftest import load_stories
from trainer.config import TrainerError
from trainer.tokenizer import EOS, load_tokenizer, save_tokenizer, tokenizer_hash, train_tokenizer


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(load_stories()[:200], vocab_size=600, out_dir=out)
    return out


def test_trained_tokenizer_is_a_transformers_fast_tokenizer(tok_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert tok.is_fast
    assert len(tok) == 600
    assert tok.eos_token == tok.bos_token == tok.pad_token == EOS
    assert tok.eos_token_id == 0
    story = load_stories()[250]  # not in the tokenizer's training text
    ids = tok(story)["input_ids"]
    assert tok.decode(ids) == story  # byte-level: lossless round trip
    assert len(ids) < len(story.encode()) / 2  # merges learned: well under one token per byte
    assert tok.convert_tokens_to_ids(EOS) == tok.eos_token_id
    assert tok(f"a{EOS}b")["input_ids"].count(tok.eos_token_id) == 1


def test_vocab_size_is_configurable(tmp_path: Path) -> None:
    tok = train_tokenizer(load_stories()[:50], vocab_size=300, out_dir=tmp_path)
    assert len(tok) == 300
    text = "Zebra 123 ünïcode"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_hash_identifies_content(tok_dir: Path, tmp_path: Path) -> None:
    a, b = load_tokenizer(tok_dir), load_tokenizer(tok_dir)
    assert tokenizer_hash(a) == tokenizer_hash(b)
    other = train_tokenizer(load_stories()[:50], vocab_size=300, out_dir=tmp_path)
    assert tokenizer_hash(other) != tokenizer_hash(a)


def test_bad_tokenizer_inputs(tmp_path: Path) -> None:
    with pytest.raises(TrainerError, match="too small"):
        train_tokenizer(["a b c"], vocab_size=100, out_dir=tmp_path)
    with pytest.raises(TrainerError, match="not a tokenizer directory"):
        load_tokenizer(tmp_path / "nowhere")


def test_saved_config_names_a_class_transformers_4_and_5_load(tok_dir: Path) -> None:
    import json

    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    # TokenizersBackend exists in transformers 5 only; pyproject allows transformers>=4.40.
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert not {"is_local", "local_files_only"} & set(config)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert tok.is_fast and tok.eos_token == EOS and len(tok) == 600
    resaved = tok_dir.parent / "resaved"
    save_tokenizer(load_tokenizer(tok_dir), resaved)  # what checkpoints and the model dir get
    again = json.loads((resaved / "tokenizer_config.json").read_text())
    assert again["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_damaged_cached_tokenizer_is_trained_again(export_dir, tmp_path, caplog) -> None:
    from trainer.config import TrainConfig
    from trainer.data import load_export
    from trainer.tokenizer import prepare_tokenizer

    cfg = TrainConfig(vocab_size=300, cache_dir=str(tmp_path))
    ds = load_export(export_dir)
    first = prepare_tokenizer(cfg, ds, "fp")
    (cached,) = (tmp_path / "tokenizers").iterdir()
    text = (cached / "tokenizer.json").read_text()
    (cached / "tokenizer.json").write_text(text[: len(text) // 2])  # a copy cut short
    with caplog.at_level("WARNING", logger="trainer.tokenizer"):
        again = prepare_tokenizer(cfg, ds, "fp")
    assert f"cached tokenizer {cached} is damaged" in caplog.text
    assert tokenizer_hash(again) == tokenizer_hash(first)
    assert [p.name for p in (tmp_path / "tokenizers").iterdir()] == [cached.name]  # no temp dirs
    assert (cached / "tokenizer.json").read_text() == text
