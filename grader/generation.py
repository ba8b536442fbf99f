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


def generate(
    lm: LoadedModel,
    prompts: list[str],
    settings: GenerationSettings,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> list[Completion]:
    """Complete every prompt (repeat a prompt to get several samples); order is preserved."""
    import torch

    if not prompts:
        return []
    if settings.max_new_tokens >= lm.context_length:
        # Positions past the context do not exist; keep half the window for the beginning.
        log.warning(
            "max_new_tokens=%d capped to half the context %d",
            settings.max_new_tokens,
            lm.context_length,
        )
        settings = replace(settings, max_new_tokens=lm.context_length // 2)
    encoded = [_encode(lm, p, settings.max_new_tokens) for p in prompts]
    # Similar lengths in one batch waste less compute on padding.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    results: list[Completion | None] = [None] * len(prompts)
    gen = torch.Generator(device=lm.model.device).manual_seed(settings.seed)
    bs = max(1, settings.batch_size if settings.num_beams == 1 else settings.batch_size // 4)
    for start in range(0, len(order), bs):
        idx = order[start : start + bs]
        batch = [encoded[i] for i in idx]
        if settings.num_beams > 1:
            outs = _beam_batch(lm, batch, settings)
        else:
            outs = _sample_batch(lm, batch, settings, gen)
        for i, new_ids in zip(idx, outs, strict=True):
            text, n, finished = _decode(lm, new_ids)
            results[i] = Completion(prompt=prompts[i], text=text, n_tokens=n, finished=finished)
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


def _sample_batch(lm: LoadedModel, batch: list[list[int]], settings: GenerationSettings, gen):
    """Our own decode loop: one prefill, then one token per step reusing past_key_values."""
    import torch

    model = lm.model
    ids, mask = _left_pad(lm, batch)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    eos = lm.eos_id
    rows = ids.shape[0]
    done = torch.zeros(rows, dtype=torch.bool, device=ids.device)
    produced: list[torch.Tensor] = []
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1, :]
        last_pos = positions[:, -1:]
        for _ in range(settings.max_new_tokens):
            if settings.temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
            if eos is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
                done = done | (nxt == eos)
            produced.append(nxt)
            if bool(done.all()) or len(produced) == settings.max_new_tokens:
                break
            mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=mask.device)], 1)
            last_pos = last_pos + 1
            out = model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=last_pos,
                past_key_values=past,
                use_cache=True,
            )
            past = out.past_key_values
            logits = out.logits[:, -1, :]
    tokens = torch.stack(produced, 1).tolist()
    return tokens


def _beam_batch(lm: LoadedModel, batch: list[list[int]], settings: GenerationSettings):
    import torch

    ids, mask = _left_pad(lm, batch)
    with torch.inference_mode():
        out = lm.model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            num_beams=settings.num_beams,
            max_new_tokens=settings.max_new_tokens,
            early_stopping=True,
            pad_token_id=lm.tokenizer.pad_token_id,
            eos_token_id=lm.eos_id,
        )
    return out[:, ids.shape[1] :].tolist()


def generate_sequential(
    lm: LoadedModel, prompts: list[str], settings: GenerationSettings
) -> list[Completion]:
    """Baseline: one `model.generate` call per completion (what a naive evaluator does)."""
    import torch

    torch.manual_seed(settings.seed)
    results = []
    for prompt in prompts:
        seq = _encode(lm, prompt, settings.max_new_tokens)
        ids = torch.tensor([seq], device=lm.model.device)
        with torch.inference_mode():
            out = lm.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=settings.temperature > 0,
                temperature=settings.temperature if settings.temperature > 0 else None,
                **({"top_k": 0} if settings.temperature > 0 else {}),
                num_beams=settings.num_beams,
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=lm.tokenizer.pad_token_id,
                eos_token_id=lm.eos_id,
            )
        text, n, finished = _decode(lm, out[0, ids.shape[1] :].tolist())
        results.append(Completion(prompt=prompt, text=text, n_tokens=n, finished=finished))
    return results
