"""Sampling from a trained model directory."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.config import TrainerError
from trainer.model import resolve_device


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
    """`n` sampled continuations of `prompt` (prompt included), stopping at end of story."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise TrainerError(f"{path} is not a model directory (no config.json)")
    dev = resolve_device(device)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(dev).eval()
    if seed is not None:
        torch.manual_seed(seed)
    inputs = tok(prompt, return_tensors="pt").to(dev)
    if inputs["input_ids"].shape[1] >= model.config.max_position_embeddings:
        raise TrainerError(
            f"prompt is {inputs['input_ids'].shape[1]} tokens; the model has "
            f"{model.config.max_position_embeddings} positions"
        )
    room = model.config.max_position_embeddings - inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(
            **inputs,
            do_sample=True,
            temperature=temperature,
            top_k=top_k or None,
            max_new_tokens=min(max_new_tokens, room),
            num_return_sequences=n,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.eos_token_id,
        )
    return [tok.decode(seq, skip_special_tokens=True) for seq in out]
