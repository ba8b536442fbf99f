"""Byte-level BPE tokenizer trained on the stories, saved as a transformers fast tokenizer."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.config import OptionError, TrainConfig, TrainerError
from trainer.data import COLUMNS, text_batches

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"  # the release's story separator; also bos and pad, as in GPT-Neo
MIN_VOCAB = 257  # 256 byte symbols + the end-of-story token
# transformers 5 names its fast tokenizer class TokenizersBackend in tokenizer_config.json, a
# name 4.x (which pyproject allows) cannot load; PreTrainedTokenizerFast loads in both.
PORTABLE_CLASS = "PreTrainedTokenizerFast"
# Load-time arguments 5.x writes into tokenizer_config.json: not properties of the tokenizer.
LOAD_TIME_KEYS = ("is_local", "local_files_only")
MODEL_INPUTS = ("input_ids", "attention_mask")  # what a causal LM takes: no token_type_ids


def train_tokenizer(
    texts: Iterable[str], *, vocab_size: int, out_dir: str | Path, max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and save it to `out_dir` (tokenizer.json etc.)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB:
        raise OptionError(f"vocab size {vocab_size} is too small; byte-level BPE needs >= 257")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    bpe = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,  # a merge seen once is noise, not vocabulary
        special_tokens=[EOS],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=bpe)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_max_length=max_length,
        # 5.x's defaults, which 4.x lacks (see save_tokenizer): a tokenizer trained under 4.x
        # is then saved with them too.
        model_input_names=list(MODEL_INPUTS),
        clean_up_tokenization_spaces=False,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(fast, out)
    log.info("tokenizer trained vocab=%d path=%s", len(fast), out)
    return fast


def save_tokenizer(tok: Any, out_dir: str | Path) -> None:
    """`save_pretrained`, with files transformers 4.40+ (tokenizers 0.19+) and 5.x read alike.

    Checked by hand: a model directory saved so loads, encodes, decodes and generates the same
    in transformers 4.40.2 (tokenizers 0.19.1), 4.45.2, 4.57.6 and 5.24 (tests/trainer/
    test_tokenizer.py says how).
    """
    tok.save_pretrained(out_dir)
    out = Path(out_dir)
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    if config.get("tokenizer_class") in ("TokenizersBackend", None):
        config["tokenizer_class"] = PORTABLE_CLASS  # named ones (GPT2TokenizerFast) load in both
    for key in LOAD_TIME_KEYS:
        config.pop(key, None)
    # Settings 5.x leaves out but 4.x defaults differently, written out so every reader behaves
    # as 5.x: 4.x also returns token_type_ids (`model(**tok(text))` then adds token 0's
    # embedding at every GPT-Neo position; Llama rejects them; the models never train on them),
    # and before 4.45 decode() cleans up spaces (" ." -> "."), no longer a lossless round trip.
    names = config.get("model_input_names") or tok.model_input_names
    config["model_input_names"] = [n for n in names if n != "token_type_ids"]
    config.setdefault("clean_up_tokenization_spaces", bool(tok.clean_up_tokenization_spaces))
    _write_json(out / "tokenizer_config.json", config)
    tokenizer_json = out / "tokenizer.json"
    if tokenizer_json.is_file():
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        if legacy_merges(data):
            _write_json(tokenizer_json, data)


def legacy_merges(data: dict) -> bool:
    """BPE merges of a tokenizer.json as "a b" strings; True when they were pairs.

    tokenizers >= 0.20 writes ["a", "b"] pairs and reads both forms; 0.19 (transformers
    4.40-4.44) fails on pairs ("data did not match any variant of untagged enum ModelWrapper").
    A merge with a space in it stays a pair: as a string it would split in the wrong place
    (byte-level BPE never has one: the space is the byte symbol Ġ).
    """
    model = data.get("model") or {}
    merges = model.get("merges")
    if model.get("type") != "BPE" or not merges or not isinstance(merges[0], list):
        return False
    if any(len(m) != 2 or " " in m[0] or " " in m[1] for m in merges):
        return False
    model["merges"] = [f"{a} {b}" for a, b in merges]
    return True


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A tokenizer directory the user already has; it must define an end-of-text token."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not (p / "tokenizer.json").is_file() and not (p / "tokenizer_config.json").is_file():
        raise TrainerError(f"{p} is not a tokenizer directory (no tokenizer.json)")
    try:
        tok = AutoTokenizer.from_pretrained(p)
    except Exception as exc:  # a damaged file: JSON, the Rust parser or transformers raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainerError(f"{p}: cannot load the tokenizer ({reason})") from None
    if not getattr(tok, "is_fast", False):
        raise TrainerError(f"{p}: only fast (tokenizer.json) tokenizers are supported")
    if tok.eos_token_id is None:
        raise TrainerError(f"{p}: the tokenizer has no eos token to separate stories")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _load_cached(cached: Path) -> PreTrainedTokenizerFast | None:
    """The cache's tokenizer, or None when there is none or it is damaged (then rebuilt)."""
    if not cached.exists():
        return None
    try:
        return load_tokenizer(cached)
    except TrainerError as exc:
        log.warning("cached tokenizer %s is damaged (%s); training it again", cached, exc)
        return None


def tokenizer_hash(tok: PreTrainedTokenizerFast) -> str:
    """Content hash: two tokenizers with the same hash encode identically.

    The same under tokenizers 0.19 and 0.20+ (a run resumes across them): merges 0.19 writes
    as "a b" strings are hashed as the ["a", "b"] pairs of 0.20+, whose text is hashed as is.
    """
    text = tok.backend_tokenizer.to_str()
    data = json.loads(text)
    merges = (data.get("model") or {}).get("merges")
    if merges and isinstance(merges[0], str):
        data["model"]["merges"] = [m.split(" ", 1) for m in merges]
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)  # as to_str() writes
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_tokenizer(cfg: TrainConfig, ds: Any, fingerprint: str) -> PreTrainedTokenizerFast:
    """The run's tokenizer: the user's, a cached one for this data, or a newly trained one."""
    if cfg.tokenizer:
        return load_tokenizer(cfg.tokenizer)
    column = COLUMNS[cfg.format]
    cached = cfg.resolved_cache_dir() / "tokenizers" / f"{fingerprint}-{column}-v{cfg.vocab_size}"
    tok = _load_cached(cached)
    if tok is None:
        # Trained into a temporary directory and renamed: a kill mid-save leaves no cache
        # entry that looks complete.
        tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        batches = text_batches(ds["train"], column, 1000)
        tok = train_tokenizer(batches, vocab_size=cfg.vocab_size, out_dir=tmp)
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(tmp, cached)
    shortfall = vocab_shortfall(cfg.vocab_size, len(tok), stories=ds["train"].num_rows)
    if shortfall:
        log.warning("%s", shortfall)
    return tok


def vocab_shortfall(requested: int, got: int, *, stories: int) -> str | None:
    """One line saying why a trained tokenizer is smaller than asked, or None when it is not."""
    if got >= requested:
        return None
    return (
        f"tokenizer has {got:,} tokens, not the {requested:,} asked for: the {stories:,} "
        f"training stories hold only {got - MIN_VOCAB:,} merges seen at least twice "
        f"(min_frequency=2); the model is sized for {got:,}. Use more stories or "
        f"--vocab-size {got} to silence this"
    )
