"""Export loading, one-time pre-tokenization to memory-mapped token files, batch sampling."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.config import TrainerError

if TYPE_CHECKING:
    import torch
    from datasets import Dataset, DatasetDict
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

COLUMNS = {"plain": "text", "instruct": "instruct_text"}
SPLITS = ("train", "validation")
ENCODE_CHUNK = 8192  # texts per encode_batch call: enough to keep every core busy


def load_export(path: str | Path, *, fmt: str = "plain") -> DatasetDict:
    """The export's DatasetDict, checked for the splits and column the format needs."""
    from datasets import load_from_disk

    p = Path(path)
    if not (p / "dataset_dict.json").is_file():
        raise TrainerError(f"{p} is not an export directory (no dataset_dict.json)")
    if fmt not in COLUMNS:
        raise TrainerError(f"unknown format {fmt!r}; use plain or instruct")
    try:
        listed = json.loads((p / "dataset_dict.json").read_text()).get("splits", [])
    except (OSError, ValueError) as exc:
        raise TrainerError(f"{p}/dataset_dict.json is unreadable: {exc}") from None
    for split in SPLITS:
        if split not in listed:
            raise TrainerError(f"export {p} has no {split!r} split")
        state = p / split / "state.json"
        # save_to_disk writes an empty split with no data files, which load_from_disk rejects.
        if state.is_file() and not json.loads(state.read_text()).get("_data_files"):
            raise TrainerError(f"export {p}: split {split!r} is empty")
    try:
        ds = load_from_disk(str(p))
    except Exception as exc:  # datasets raises many types for a damaged directory
        raise TrainerError(f"cannot read export {p}: {exc}") from None
    column = COLUMNS[fmt]
    for split in SPLITS:
        if column not in ds[split].column_names:
            raise TrainerError(f"export {p}: split {split!r} has no {column!r} column")
        if ds[split].num_rows == 0:
            raise TrainerError(f"export {p}: split {split!r} is empty")
    return ds


def export_fingerprint(path: str | Path, ds: DatasetDict, split: str) -> str:
    """The export manifest's fingerprint when present, else the datasets fingerprint."""
    manifest = Path(path) / "export.json"
    if manifest.is_file():
        try:
            fp = json.loads(manifest.read_text()).get("fingerprint")
        except (OSError, ValueError):
            fp = None
        if fp:
            return f"{fp}-{split}"
    return str(ds[split]._fingerprint)


@dataclass
class TokenFile:
    tokens: np.ndarray  # memory-mapped, uint16 or uint32, stories joined by eos
    n_docs: int
    n_bytes: int  # utf-8 bytes of the texts plus one per separator (for bits per byte)
    path: Path
    cached: bool  # True when an earlier run's file was reused

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])


def pretokenize(
    split: Dataset,
    *,
    column: str,
    tokenizer: PreTrainedTokenizerFast,
    cache_dir: str | Path,
    key: str,
) -> TokenFile:
    """Tokenize a split once into `cache_dir/tokens/KEY.bin`; later calls map the same file."""
    base = Path(cache_dir) / "tokens"
    base.mkdir(parents=True, exist_ok=True)
    bin_path, meta_path = base / f"{key}.bin", base / f"{key}.json"
    vocab = len(tokenizer)
    dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.uint32
    if bin_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        tokens = np.memmap(bin_path, dtype=np.dtype(meta["dtype"]), mode="r")
        log.info("tokens cache hit key=%s tokens=%d", key, tokens.shape[0])
        return TokenFile(tokens, meta["n_docs"], meta["n_bytes"], bin_path, cached=True)

    eos = tokenizer.eos_token_id
    backend = tokenizer.backend_tokenizer
    n_docs = n_bytes = n_tokens = 0
    tmp = bin_path.with_suffix(f".tmp{os.getpid()}")
    texts_only = split.select_columns([column])
    with tmp.open("wb") as fh:
        for start in range(0, split.num_rows, ENCODE_CHUNK):
            texts = texts_only[start : start + ENCODE_CHUNK][column]
            # encode_batch runs on all cores (Rust thread pool), without pickling the tokenizer.
            encodings = backend.encode_batch(texts, add_special_tokens=False)
            ids = [np.asarray([*e.ids, eos], dtype=dtype) for e in encodings]
            chunk = np.concatenate(ids) if ids else np.empty(0, dtype=dtype)
            chunk.tofile(fh)
            n_docs += len(texts)
            n_bytes += sum(len(t.encode()) for t in texts) + len(texts)
            n_tokens += chunk.shape[0]
    os.replace(tmp, bin_path)
    meta = {
        "dtype": np.dtype(dtype).name,
        "n_docs": n_docs,
        "n_bytes": n_bytes,
        "n_tokens": n_tokens,
    }
    meta_path.write_text(json.dumps(meta))
    log.info("tokens written key=%s docs=%d tokens=%d", key, n_docs, n_tokens)
    tokens = np.memmap(bin_path, dtype=dtype, mode="r")
    return TokenFile(tokens, n_docs, n_bytes, bin_path, cached=False)


class WindowSampler:
    """Random (seq_len + 1)-token windows; its RNG state goes into checkpoints."""

    def __init__(self, tokens: np.ndarray, *, seq_len: int, batch_size: int, seed: int) -> None:
        if tokens.shape[0] < seq_len + 1:
            raise TrainerError(
                f"training split has {tokens.shape[0]} tokens, "
                f"fewer than seq_len + 1 = {seq_len + 1}"
            )
        self.tokens = tokens
        self.batch_size = batch_size
        self.high = tokens.shape[0] - seq_len  # exclusive upper bound of window starts
        self.offsets = np.arange(seq_len + 1, dtype=np.int64)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def next(self) -> torch.Tensor:
        import torch

        starts = self.rng.integers(0, self.high, size=self.batch_size)
        batch = self.tokens[starts[:, None] + self.offsets]
        return torch.from_numpy(batch.astype(np.int64))

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]


def eval_windows(tokens: np.ndarray, *, seq_len: int, max_tokens: int) -> torch.Tensor:
    """Fixed, non-overlapping validation windows: every pass scores the same tokens."""
    import torch

    n = min((tokens.shape[0] - 1) // seq_len, max(1, max_tokens // seq_len))
    if n < 1:
        raise TrainerError(
            f"validation split has {tokens.shape[0]} tokens, fewer than seq_len + 1 = {seq_len + 1}"
        )
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)
    return torch.from_numpy(tokens[idx].astype(np.int64))
