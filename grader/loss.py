"""Validation loss, perplexity and bits per UTF-8 byte (comparable across tokenizers)."""

from __future__ import annotations

import math
from collections.abc import Callable

from grader.models import LoadedModel, tokenizer_description


def evaluate_loss(
    lm: LoadedModel,
    texts: list[str],
    *,
    context_length: int | None = None,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Mean next-token loss over the texts joined like training data (story, <|endoftext|>, ...).

    Windows overlap by one token so every token after the first is predicted exactly once;
    bits per byte divide the total NLL (in bits) by the texts' UTF-8 byte count.
    """
    import torch

    ctx = min(context_length or lm.context_length, lm.context_length)
    eos = lm.eos_id
    stream: list[int] = [eos] if eos is not None else []
    n_bytes = 0
    for t in texts:
        stream.extend(lm.tokenizer(t, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(eos)
        n_bytes += len(t.encode("utf-8"))
    if len(stream) < 2 or n_bytes == 0:
        raise ValueError("no text to compute a loss on")
    windows = [stream[s : s + ctx] for s in range(0, len(stream) - 1, ctx - 1)]
    windows = [w for w in windows if len(w) >= 2]
    total_nll = 0.0
    total_tokens = 0
    with torch.inference_mode():
        for b in range(0, len(windows), batch_size):
            chunk = windows[b : b + batch_size]
            width = max(len(w) for w in chunk)
            ids = torch.full((len(chunk), width), 0, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, w in enumerate(chunk):
                ids[r, : len(w)] = torch.tensor(w)
                labels[r, : len(w)] = torch.tensor(w)
                mask[r, : len(w)] = 1
            ids, labels, mask = (x.to(lm.model.device) for x in (ids, labels, mask))
            logits = lm.model(input_ids=ids, attention_mask=mask).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total_nll += float(nll)
            total_tokens += int((labels[:, 1:] != -100).sum())
            if on_batch:
                on_batch(len(chunk))
    loss = total_nll / total_tokens
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50)),
        "bits_per_byte": total_nll / math.log(2) / n_bytes,
        "tokens": total_tokens,
        "bytes": n_bytes,
        "texts": len(texts),
        "context_length": ctx,
        "tokenizer": tokenizer_description(lm.tokenizer),
    }
