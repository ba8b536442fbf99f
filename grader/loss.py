"""Validation loss, perplexity and bits per UTF-8 byte: `trainer.evaluate`'s one definition.

The trainer reports the same numbers for its validation split, so a model card's figures and
the grader's agree when given the same texts.
"""

from __future__ import annotations

from collections.abc import Callable

from grader.models import LoadedModel, tokenizer_description
from trainer.evaluate import evaluate_stream, model_nll, text_stream


def evaluate_loss(
    lm: LoadedModel,
    texts: list[str],
    *,
    context_length: int | None = None,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Mean next-token loss over the texts joined like training data (<eos> story <eos> ...).

    Windows never exceed the context the model was trained at; every token after the leading
    <eos> is predicted exactly once. Bits per byte divide the total NLL (in bits) by the texts'
    UTF-8 byte count.
    """
    ctx = min(context_length or lm.context_length, lm.context_length)
    eos = lm.eos_id
    if eos is None:
        raise ValueError("the tokenizer has no end-of-text token to join the texts with")
    stream, n_bytes = text_stream(lm.tokenizer, texts, eos)
    if stream.shape[0] < 2 or n_bytes == 0:
        raise ValueError("no text to compute a loss on")
    result = evaluate_stream(
        model_nll(lm.model),
        stream,
        context=ctx,
        n_bytes=n_bytes,
        batch_size=batch_size,
        device=lm.model.device,
        pad_id=eos,
        on_batch=on_batch,
    )
    return {
        "loss": result.loss,
        "perplexity": result.perplexity,
        "bits_per_byte": result.bits_per_byte,
        "tokens": result.tokens,
        "bytes": n_bytes,
        "texts": len(texts),
        "context_length": ctx,
        "tokenizer": tokenizer_description(lm.tokenizer),
    }
