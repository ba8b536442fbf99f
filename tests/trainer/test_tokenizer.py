from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tests.trainer.conftest import load_stories
from trainer.config import TrainerError
from trainer.tokenizer import (
    EOS,
    legacy_merges,
    load_tokenizer,
    save_tokenizer,
    tokenizer_hash,
    train_tokenizer,
)


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


# pyproject's train extra allows transformers>=4.40 (tokenizers>=0.19). Verified by hand: a
# tiny model trained by `tinystories train` under 5.24/0.23.3 and under 4.40.2/0.19.1 (those
# wheels put first on PYTHONPATH with `pip install --no-deps --target`), and each directory
# loaded with AutoTokenizer + AutoModelForCausalLM in 4.40.2/0.19.1, 4.45.2/0.20.3,
# 4.57.6/0.22.2 and 5.24.0/0.23.3: the same token ids, logits and greedy generation, for the
# tiny and llama-15M presets. The tests below pin the saved files' parts that made 4.x differ.


def test_saved_config_names_a_class_transformers_4_and_5_load(tok_dir: Path) -> None:
    import json

    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    # TokenizersBackend exists in transformers 5 only.
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert not {"is_local", "local_files_only"} & set(config)
    # 4.x defaults: token_type_ids (added to every GPT-Neo position; Llama raises TypeError)
    # and, before 4.45, a decode that turns " ." into ".".
    assert config["model_input_names"] == ["input_ids", "attention_mask"]
    assert config["clean_up_tokenization_spaces"] is False
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert tok.is_fast and tok.eos_token == EOS and len(tok) == 600
    assert list(tok("Hi , there")) == ["input_ids", "attention_mask"]
    assert tok.decode(tok("Hi , there . I don 't")["input_ids"]) == "Hi , there . I don 't"
    resaved = tok_dir.parent / "resaved"
    save_tokenizer(load_tokenizer(tok_dir), resaved)  # what checkpoints and the model dir get
    again = json.loads((resaved / "tokenizer_config.json").read_text())
    assert again["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert again["model_input_names"] == ["input_ids", "attention_mask"]
    assert again["clean_up_tokenization_spaces"] is False


def test_saved_tokenizer_json_reads_in_tokenizers_0_19(tmp_path: Path) -> None:
    import json

    trained = train_tokenizer(load_stories()[:50], vocab_size=300, out_dir=tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    # tokenizers 0.19 (transformers 4.40-4.44) reads format 1.0 with merges as "a b" strings
    # only; ["a", "b"] pairs (0.20+) fail there: "data did not match any variant of untagged
    # enum ModelWrapper". 0.23 reads both, and the file holds the same tokenizer.
    assert data["version"] == "1.0" and data["model"]["type"] == "BPE"
    merges = data["model"]["merges"]
    assert merges and all(isinstance(m, str) and m.count(" ") == 1 for m in merges)
    assert tokenizer_hash(load_tokenizer(tmp_path)) == tokenizer_hash(trained)


def test_hash_is_the_same_for_the_merges_tokenizers_0_19_serialises(tok_dir: Path) -> None:
    import json
    from types import SimpleNamespace

    tok = load_tokenizer(tok_dir)
    data = json.loads(tok.backend_tokenizer.to_str())
    legacy_merges(data)  # as tokenizers 0.19's to_str() writes them: "a b" strings
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    old = SimpleNamespace(backend_tokenizer=SimpleNamespace(to_str=lambda: text))
    assert tokenizer_hash(old) == tokenizer_hash(tok)  # resuming after an upgrade to 0.20+


def test_legacy_merges_keeps_pairs_it_cannot_write_as_strings() -> None:
    pairs = {"model": {"type": "BPE", "merges": [["a", "b"], ["ab", "c"]]}}
    assert legacy_merges(pairs) and pairs["model"]["merges"] == ["a b", "ab c"]
    assert not legacy_merges(pairs)  # already strings
    spaced = {"model": {"type": "BPE", "merges": [["a", "b"], ["a b", "c"]]}}
    assert not legacy_merges(spaced) and spaced["model"]["merges"][1] == ["a b", "c"]
    assert not legacy_merges({"model": {"type": "Unigram", "vocab": []}})


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
