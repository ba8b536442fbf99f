"""Export loading, one-time pre-tokenization to memory-mapped token files, batch sampling.

An export is either the service's Hugging Face dataset directory (dataset_dict.json) or a
directory of release-format text files (trainer/textdata.py: its layouts, and the lists of
rejected stories an export writes beside them).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.config import TrainerError
from trainer.textdata import TextSplit, drop_rejected_texts, load_text_export, no_accepted

if TYPE_CHECKING:
    import torch
    from datasets import Dataset, DatasetDict
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

COLUMNS = {"plain": "text", "instruct": "instruct_text"}
SPLITS = ("train", "validation")
ENCODE_CHUNK = 8192  # texts per encode_batch call: enough to keep every core busy


def text_batches(split: Any, column: str, size: int) -> Iterator[list[str]]:
    """The split's texts of `column`, `size` at a time, without loading an Arrow split whole."""
    if isinstance(split, TextSplit):
        for i in range(0, split.num_rows, size):
            yield split.texts[i : i + size]
        return
    texts_only = split.select_columns([column])
    for i in range(0, split.num_rows, size):
        yield texts_only[i : i + size][column]


def _split_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainerError(f"{path} is damaged ({exc}); re-export the dataset") from None
    if not isinstance(state, dict):
        raise TrainerError(f"{path} is damaged (not a JSON object); re-export the dataset")
    return state


def load_export(path: str | Path, *, fmt: str = "plain") -> DatasetDict | dict[str, TextSplit]:
    """The export's splits, checked for the splits and column the format needs."""
    p = Path(path)
    if fmt not in COLUMNS:
        raise TrainerError(f"unknown format {fmt!r}; use plain or instruct")
    if not (p / "dataset_dict.json").is_file():
        return load_text_export(p, fmt)
    from datasets import load_from_disk

    try:
        listed = json.loads((p / "dataset_dict.json").read_text()).get("splits", [])
    except (OSError, ValueError) as exc:
        raise TrainerError(f"{p}/dataset_dict.json is unreadable: {exc}") from None
    for split in SPLITS:
        if split not in listed:
            raise TrainerError(f"export {p} has no {split!r} split")
        state = p / split / "state.json"
        # save_to_disk writes an empty split with no data files, which load_from_disk rejects.
        if state.is_file() and not _split_state(state).get("_data_files"):
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


def drop_rejected(ds: Any, *, include: bool) -> tuple[Any, dict[str, int] | None]:
    """The splits without stories that failed the checks, and how many each split had.

    Only an export made with --include-rejected has them marked: the `accepted` column, or for
    text files the lists beside them (trainer/textdata.py). Without (the real release, say)
    nothing is dropped and the count is None. `include` keeps them (counted still).
    """
    if all(isinstance(ds[s], TextSplit) for s in SPLITS):
        return drop_rejected_texts(dict(ds), include=include)
    if any(isinstance(ds[s], TextSplit) or "accepted" not in ds[s].column_names for s in SPLITS):
        return ds, None
    counts, kept = {}, {}
    for split in SPLITS:
        accepted = np.asarray(ds[split].data.column("accepted").to_numpy(zero_copy_only=False))
        counts[split] = int((~accepted.astype(bool)).sum())
        if include or counts[split] == 0:
            kept[split] = ds[split]
            continue
        # In memory: otherwise `datasets` writes an indices file into the export directory.
        kept[split] = ds[split].select(np.flatnonzero(accepted), keep_in_memory=True)
        if kept[split].num_rows == 0:
            raise no_accepted(split, counts[split])
    from datasets import DatasetDict

    return DatasetDict(kept), counts


def export_fingerprint(path: str | Path, ds: Any, split: str) -> str:
    """The export manifest's fingerprint when present, else the split's content fingerprint."""
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
    tokens: np.ndarray  # memory-mapped, uint16 or uint32, each story followed by eos
    n_docs: int
    n_bytes: int  # UTF-8 bytes of the texts, separators excluded (trainer.evaluate's bpb)
    path: Path
    cached: bool  # True when an earlier run's file was reused

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])


def pretokenize(
    split: Dataset | TextSplit,
    *,
    column: str,
    tokenizer: PreTrainedTokenizerFast,
    cache_dir: str | Path,
    key: str,
) -> TokenFile:
    """Tokenize a split once into `cache_dir/tokens/KEY.bin`; later calls map the same file."""
    base = Path(cache_dir) / "tokens"
    base.mkdir(parents=True, exist_ok=True)
    key = f"{key}-v2"  # v2: n_bytes counts text bytes only (v1 added one per separator)
    bin_path, meta_path = base / f"{key}.bin", base / f"{key}.json"
    vocab = len(tokenizer)
    dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.uint32
    if bin_path.is_file() and meta_path.is_file():
        cached = _cached_tokens(bin_path, meta_path)
        if cached is not None:
            log.info("tokens cache hit key=%s tokens=%d", key, cached.n_tokens)
            return cached

    eos = tokenizer.eos_token_id
    backend = tokenizer.backend_tokenizer
    n_docs = n_bytes = n_tokens = 0
    tmp = bin_path.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("wb") as fh:
        for texts in text_batches(split, column, ENCODE_CHUNK):
            # encode_batch runs on all cores (Rust thread pool), without pickling the tokenizer.
            encodings = backend.encode_batch(texts, add_special_tokens=False)
            ids = [np.asarray([*e.ids, eos], dtype=dtype) for e in encodings]
            chunk = np.concatenate(ids) if ids else np.empty(0, dtype=dtype)
            chunk.tofile(fh)
            n_docs += len(texts)
            n_bytes += sum(len(t.encode()) for t in texts)
            n_tokens += chunk.shape[0]
    os.replace(tmp, bin_path)
    meta = {
        "dtype": np.dtype(dtype).name,
        "n_docs": n_docs,
        "n_bytes": n_bytes,
        "n_tokens": n_tokens,
    }
    # The metadata is written after the tokens and renamed into place: a kill in between
    # leaves tokens without metadata, which the next run rebuilds.
    meta_tmp = meta_path.with_suffix(f".tmp{os.getpid()}")
    meta_tmp.write_text(json.dumps(meta))
    os.replace(meta_tmp, meta_path)
    log.info("tokens written key=%s docs=%d tokens=%d", key, n_docs, n_tokens)
    tokens = np.memmap(bin_path, dtype=dtype, mode="r")
    return TokenFile(tokens, n_docs, n_bytes, bin_path, cached=False)


def _cached_tokens(bin_path: Path, meta_path: Path) -> TokenFile | None:
    """An earlier run's token file, or None (with one line) when it is damaged: rebuilt then."""
    try:
        meta = json.loads(meta_path.read_text())
        dtype = np.dtype(meta["dtype"])
        n_tokens, n_docs, n_bytes = int(meta["n_tokens"]), int(meta["n_docs"]), int(meta["n_bytes"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("tokens cache %s is damaged (%s); tokenizing again", meta_path, exc)
        return None
    size = bin_path.stat().st_size
    if size != n_tokens * dtype.itemsize:
        log.warning(
            "tokens cache %s is damaged (%d bytes, %d tokens recorded); tokenizing again",
            bin_path,
            size,
            n_tokens,
        )
        return None
    tokens = np.memmap(bin_path, dtype=dtype, mode="r")
    return TokenFile(tokens, n_docs, n_bytes, bin_path, cached=True)


class WindowSampler:
    """Random (seq_len + 1)-token windows; batch k depends only on (seed, k).

    A counter instead of a stateful RNG: a checkpoint stores the next batch index, and a
    prefetching thread can run ahead without changing what a resumed run sees.
    """

    def __init__(self, tokens: np.ndarray, *, seq_len: int, batch_size: int, seed: int) -> None:
        if tokens.shape[0] < seq_len + 1:
            raise TrainerError(
                f"training split has {tokens.shape[0]} tokens, "
                f"fewer than seq_len + 1 = {seq_len + 1}"
            )
        self.tokens = tokens
        self.batch_size = batch_size
        self.seed = seed
        self.high = tokens.shape[0] - seq_len  # exclusive upper bound of window starts
        self.offsets = np.arange(seq_len + 1, dtype=np.int64)
        self.index = 0

    def batch(self, k: int) -> torch.Tensor:
        import torch

        rng = np.random.default_rng((self.seed, k))
        starts = rng.integers(0, self.high, size=self.batch_size)
        return torch.from_numpy(self.tokens[starts[:, None] + self.offsets].astype(np.int64))

    def next(self) -> torch.Tensor:
        self.index += 1
        return self.batch(self.index - 1)

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "index" not in state:
            raise TrainerError(
                "checkpoint is from an older trainer (stateful sampler); use --no-resume "
                "or a new --out directory"
            )
        self.index = int(state["index"])


class Prefetcher:
    """Batches of a WindowSampler made `depth` ahead on a thread, in pinned memory for CUDA.

    Gathering windows from the memory map and pinning them is host work; on a thread it
    overlaps the GPU's step instead of delaying the next launch.
    """

    def __init__(self, sampler: WindowSampler, *, depth: int = 4, pin: bool = True) -> None:
        self.sampler, self.pin = sampler, pin
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, args=(sampler.index,), daemon=True)
        self.thread.start()

    def _fill(self, k: int) -> None:
        try:
            while not self.stop.is_set():
                batch = self.sampler.batch(k)
                item: Any = batch.pin_memory() if self.pin else batch
                while not self.stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                k += 1
        except BaseException as exc:  # handed to the consumer, raised in the training loop
            self.queue.put(exc)

    def next(self) -> torch.Tensor:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        self.sampler.index += 1
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
