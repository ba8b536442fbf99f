"""Sampling from a trained model directory."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.config import OptionError, TrainerError
from trainer.model import resolve_device


def check_sampling(*, max_new_tokens: int, temperature: float, top_k: int, n: int) -> None:
    """Sampling settings that cannot work, as one OptionError line."""
    if n < 1 or max_new_tokens < 1:
        raise OptionError("n and max_new_tokens must be >= 1")
    if not temperature > 0:
        raise OptionError(f"temperature must be > 0, not {temperature!r}")
    if top_k < 0:
        raise OptionError(f"top_k must be >= 0 (0 disables it), not {top_k!r}")


def generate(
    model_dir: str | Path,
    prompt: str,
    *,
    max_new_tokens: int = 120,
    temperature: float = 0.8,
    top_k: int = 50,
    n: int = 1,
    seed: int | None = None,
    device: str = "auto",
) -> list[str]:
    """`n` sampled continuations of `prompt` (prompt included), stopping at end of story.

    The prompt follows `<|endoftext|>`, as every story does in training and as the grader
    encodes beginnings (grader.generation._encode): an empty prompt starts a story.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, n=n)
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise TrainerError(f"{path} is not a model directory (no config.json)")
    dev = resolve_device(device)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(dev).eval()
    if seed is not None:
        torch.manual_seed(seed)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    if tok.eos_token_id is not None:
        ids = [tok.eos_token_id, *ids]
    positions = model.config.max_position_embeddings
    if len(ids) >= positions:
        raise TrainerError(
            f"prompt is {len(ids)} tokens (with the story start); the model has {positions} "
            "positions"
        )
    input_ids = torch.tensor([ids], dtype=torch.long, device=dev)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=True,
            temperature=temperature,
            top_k=top_k or None,
            max_new_tokens=min(max_new_tokens, positions - len(ids)),
            num_return_sequences=n,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.eos_token_id,
        )
    return [tok.decode(seq, skip_special_tokens=True) for seq in out]
