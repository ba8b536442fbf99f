"""The one validation loss and bits-per-byte definition, shared by the trainer and the grader.

The text is one token stream: `<eos> story <eos> story <eos> ...`, exactly what training sees,
so every story's first token and its end are predicted too. The stream is cut into consecutive
windows of `context` inputs; each window predicts the `context` tokens that follow its inputs,
so every token after the leading `<eos>` is scored exactly once, always with as much history as
the window holds. Loss is the mean NLL (nats) over scored tokens; bits per byte is the summed
NLL in bits over the UTF-8 bytes of the story texts (separators are not text: zero bytes, their
prediction still counts), which makes it comparable across tokenizers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.xent import IGNORE

NllFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Validation:
    loss: float  # mean nats per scored token
    bits_per_byte: float
    tokens: int  # tokens scored
    bytes: float  # UTF-8 bytes those tokens spell (pro rata for a sample)
    windows: int
    sampled: bool  # True: a seeded sample of the windows, the same every pass

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50.0))


def text_stream(tokenizer: Any, texts: Iterable[str], eos_id: int) -> tuple[np.ndarray, int]:
    """(`<eos> t1 <eos> t2 <eos> ...` as int64 ids, UTF-8 bytes of the texts)."""
    parts: list[list[int]] = [[eos_id]]
    n_bytes = 0
    for text in texts:
        parts.append([*tokenizer(text, add_special_tokens=False)["input_ids"], eos_id])
        n_bytes += len(text.encode("utf-8"))
    return np.fromiter((t for p in parts for t in p), dtype=np.int64), n_bytes


def window_starts(n_tokens: int, context: int, *, max_windows: int | None, seed: int) -> np.ndarray:
    """Starts of the scored windows: all of them, or a seeded, sorted sample of `max_windows`."""
    starts = np.arange(0, max(n_tokens - 1, 0), context, dtype=np.int64)
    if max_windows is not None and 0 < max_windows < starts.shape[0]:
        rng = np.random.default_rng(seed)
        starts = np.sort(rng.choice(starts, size=max_windows, replace=False))
    return starts


def evaluate_stream(
    nll: NllFn,
    stream: np.ndarray,
    *,
    context: int,
    n_bytes: int,
    batch_size: int,
    device: torch.device,
    max_windows: int | None = None,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    pad_id: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> Validation:
    """Score `stream` with `nll(inputs, targets) -> summed NLL` (targets IGNORE are padding).

    Batches always have `batch_size` rows of `context` tokens (the tail is padded), so a
    compiled model sees one shape. With `world` > 1 each rank scores every world-th window and
    the sums are all-reduced (the process group must exist).
    """
    starts = window_starts(stream.shape[0], context, max_windows=max_windows, seed=seed)
    n_windows = int(starts.shape[0])
    if n_windows == 0:
        raise ValueError("no text to compute a loss on")
    mine = starts[rank::world]
    offsets = np.arange(context + 1, dtype=np.int64)
    padded = np.concatenate([stream.astype(np.int64), np.full(context + 1, -1, dtype=np.int64)])
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for b in range(0, mine.shape[0], batch_size):
            chunk = padded[mine[b : b + batch_size, None] + offsets]
            if chunk.shape[0] < batch_size:  # whole-padding rows: same shape, nothing scored
                fill = np.full((batch_size - chunk.shape[0], context + 1), -1, dtype=np.int64)
                chunk = np.concatenate([chunk, fill])
            window = torch.from_numpy(chunk).to(device, non_blocking=True)
            # Padding only follows real tokens, and attention is causal: it changes no score.
            inputs = torch.where(window[:, :-1] < 0, pad_id, window[:, :-1])
            targets = torch.where(window[:, 1:] < 0, IGNORE, window[:, 1:])
            totals[0] += nll(inputs, targets).double()
            totals[1] += (targets != IGNORE).sum()
            if on_batch is not None:
                on_batch(min(batch_size, mine.shape[0] - b))
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(totals)
    total_nll, tokens = float(totals[0]), int(totals[1])
    sampled = n_windows < len(range(0, max(stream.shape[0] - 1, 0), context))
    scored_bytes = n_bytes * tokens / max(stream.shape[0] - 1, 1) if sampled else float(n_bytes)
    return Validation(
        loss=total_nll / max(tokens, 1),
        bits_per_byte=total_nll / math.log(2) / max(scored_bytes, 1.0),
        tokens=tokens,
        bytes=scored_bytes,
        windows=n_windows,
        sampled=sampled,
    )


def model_nll(model: Any) -> NllFn:
    """`nll(inputs, targets)` for a transformers causal LM: the trainer's fast path (SDPA
    attention, chunked cross-entropy) for the architectures it trains, plain logits otherwise."""
    from trainer.model import LossModel

    head = model.get_output_embeddings()
    if model.config.model_type in ("gpt_neo", "llama") and getattr(head, "bias", None) is None:
        return LossModel(model)

    def nll(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=inputs, use_cache=False).logits
        return torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum"
        )

    return nll
