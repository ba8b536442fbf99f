"""Batched completion of story beginnings with the KV cache (sampling, greedy, beam search)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from grader.models import LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    # The paper's GPT-Eval setting: temperature 1, plain sampling (no top-k / top-p).
    temperature: float = 1.0
    # Stories in TinyStories are ~200 tokens; 200 new tokens lets most completions end on their own.
    max_new_tokens: int = 200
    # The authors also reported temperature 0 with 5 beams; num_beams > 1 switches to beam search.
    num_beams: int = 1
    # 32 rows keep a 33M model's KV cache small on CPU while amortising per-step overhead.
    batch_size: int = 32
    seed: int = 0

    @property
    def mode(self) -> str:
        if self.num_beams > 1:
            return "beam"
        return "greedy" if self.temperature <= 0 else "sample"

    @property
    def deterministic(self) -> bool:
        return self.mode != "sample"

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Completion:
    prompt: str
    text: str
    n_tokens: int
    finished: bool  # the model emitted end-of-text before max_new_tokens


def _encode(lm: LoadedModel, prompt: str, max_new_tokens: int) -> list[int]:
    ids = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # Training streams put <|endoftext|> before each story; a beginning after it is in-distribution.
    if lm.eos_id is not None:
        ids = [lm.eos_id, *ids]
    room = max(1, lm.context_length - max_new_tokens)
    return ids[-room:]


def _decode(lm: LoadedModel, new_ids: list[int]) -> tuple[str, int, bool]:
    eos = lm.eos_id
    finished = False
    if eos is not None and eos in new_ids:
        new_ids = new_ids[: new_ids.index(eos)]
        finished = True
    return lm.tokenizer.decode(new_ids, skip_special_tokens=True), len(new_ids), finished


def within_context(lm: LoadedModel, settings: GenerationSettings) -> GenerationSettings:
    """Positions past the trained context were never trained: new tokens get at most half of
    it, the beginning keeps the rest (the run says so once per model)."""
    if settings.max_new_tokens >= lm.context_length:
        return replace(settings, max_new_tokens=lm.context_length // 2)
    return settings


def generate(
    lm: LoadedModel,
    prompts: list[str],
    settings: GenerationSettings,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> list[Completion]:
    """Complete every prompt (repeat a prompt to get several samples); order is preserved.

    Batches go through transformers' `model.generate` with left padding: our own KV-cache loop
    was within 5% of it (benchmarks/RESULTS.md) and used a deprecated cache argument.
    """
    import torch

    if not prompts:
        return []
    settings = within_context(lm, settings)
    encoded = [_encode(lm, p, settings.max_new_tokens) for p in prompts]
    # Similar lengths in one batch waste less compute on padding.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    results: list[Completion | None] = [None] * len(prompts)
    bs = max(1, settings.batch_size if settings.num_beams == 1 else settings.batch_size // 4)
    # generate() samples from torch's global generator: fork it so callers' RNG is untouched.
    devices = [lm.model.device] if lm.model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(settings.seed)
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            outs = generate_batch(lm, [encoded[i] for i in idx], settings)
            for i, new_ids in zip(idx, outs, strict=True):
                text, n, finished = _decode(lm, new_ids)
                results[i] = Completion(prompts[i], text, n, finished)
            if on_batch:
                on_batch(len(idx))
    return [r for r in results if r is not None]


def _left_pad(lm: LoadedModel, batch: list[list[int]]):
    import torch

    width = max(len(b) for b in batch)
    pad = lm.tokenizer.pad_token_id
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids.to(lm.model.device), mask.to(lm.model.device)


def generate_kwargs(lm: LoadedModel, settings: GenerationSettings) -> dict:
    """`model.generate` arguments for the settings: plain sampling means no top-k/top-p cut."""
    kwargs: dict = {
        "max_new_tokens": settings.max_new_tokens,
        "pad_token_id": lm.tokenizer.pad_token_id,
        "eos_token_id": lm.eos_id,
    }
    if settings.mode == "sample":
        kwargs |= {"do_sample": True, "temperature": settings.temperature, "top_k": 0, "top_p": 1.0}
    elif settings.mode == "beam":
        kwargs |= {"do_sample": False, "num_beams": settings.num_beams, "early_stopping": True}
    else:
        kwargs |= {"do_sample": False}
    return kwargs


def generate_batch(
    lm: LoadedModel, batch: list[list[int]], settings: GenerationSettings
) -> list[list[int]]:
    """New token ids for one left-padded batch of encoded prompts."""
    import torch
    from transformers import GenerationConfig

    ids, mask = _left_pad(lm, batch)
    # One complete config, not the model's saved defaults plus overrides (deprecated, and the
    # saved ones may carry sampling settings of their own).
    config = GenerationConfig(
        bos_token_id=lm.model.config.bos_token_id, **generate_kwargs(lm, settings)
    )
    with torch.inference_mode():
        out = lm.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    return out[:, ids.shape[1] :].tolist()


def generate_sequential(
    lm: LoadedModel, prompts: list[str], settings: GenerationSettings
) -> list[Completion]:
    """One `model.generate` call per completion, unpadded: the reference batching must match."""
    import torch

    results = []
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        for prompt in prompts:
            encoded = _encode(lm, prompt, settings.max_new_tokens)
            (new_ids,) = generate_batch(lm, [encoded], settings)
            text, n, finished = _decode(lm, new_ids)
            results.append(Completion(prompt, text, n, finished))
    return results
