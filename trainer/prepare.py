"""A run's data: the export, its tokenizer and token files, made before any process group.

Every rank of a torchrun job calls `prepare_data` before `init_process_group`. The first to take
the cache's file lock trains the tokenizer and writes the token files; the others wait on the
lock, not at a NCCL barrier (whose 10-minute timeout a first tokenization of the full release
can pass), then map the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import TrainConfig
from trainer.data import (
    COLUMNS,
    TokenFile,
    drop_rejected,
    export_fingerprint,
    load_export,
    pretokenize,
)
from trainer.tokenizer import prepare_tokenizer, tokenizer_hash, vocab_shortfall

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    tokenizer: Any  # PreTrainedTokenizerFast
    tokenizer_hash: str
    train: TokenFile
    validation: TokenFile
    train_fingerprint: str
    vocab_note: str | None  # why the tokenizer is smaller than asked, or None
    # Stories per split that failed the checks (an --include-rejected export), else None.
    rejected: dict[str, int] | None = None
    rejected_included: bool = False


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """An exclusive lock on the cache directory, held while it is being filled."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "prepare.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_data(cfg: TrainConfig) -> Prepared:
    ds = load_export(cfg.data, fmt=cfg.format)
    ds, rejected = drop_rejected(ds, include=cfg.include_rejected)
    column = COLUMNS[cfg.format]
    fps = {s: export_fingerprint(cfg.data, ds, s) for s in ("train", "validation")}
    if rejected and any(rejected.values()):
        log.warning("%s", rejected_note(rejected, included=cfg.include_rejected))
        if not cfg.include_rejected:
            # Other stories than the export's fingerprint names: their own cache entries.
            fps = {s: f"{fp}-accepted" for s, fp in fps.items()}
    cache = cfg.resolved_cache_dir()
    with cache_lock(cache):
        tokenizer = prepare_tokenizer(cfg, ds, fps["train"])
        tok_hash = tokenizer_hash(tokenizer)
        files = {
            s: pretokenize(
                ds[s],
                column=column,
                tokenizer=tokenizer,
                cache_dir=cache,
                key=f"{fps[s]}-{column}-{tok_hash}",
            )
            for s in ("train", "validation")
        }
    note = None
    if not cfg.tokenizer:
        note = vocab_shortfall(cfg.vocab_size, len(tokenizer), stories=ds["train"].num_rows)
    return Prepared(
        tokenizer,
        tok_hash,
        files["train"],
        files["validation"],
        fps["train"],
        note,
        rejected,
        cfg.include_rejected,
    )


def rejected_note(rejected: dict[str, int], *, included: bool) -> str:
    """One line: how many stories of the export failed the checks, and what the run did."""
    detail = ", ".join(f"{s} {n:,}" for s, n in rejected.items())
    stories = f"{sum(rejected.values()):,} rejected stories of the export ({detail})"
    if included:
        return f"trained on {stories} (--include-rejected)"
    return f"left out {stories}; --include-rejected trains on them"
