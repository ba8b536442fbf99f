"""The model: a transformers causal LM plus a fast training forward that returns the loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from trainer.config import TrainerError
from trainer.presets import Preset, build_config


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise TrainerError(f"unknown device {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainerError(f"device {name!r} requested but CUDA is not available")
    return device


def build_model(preset: Preset, *, vocab_size: int, eos_id: int, seed: int) -> PreTrainedModel:
    """A freshly initialised float32 model; the seed fixes the initial weights."""
    torch.manual_seed(seed)
    config = build_config(preset, vocab_size=vocab_size, eos_id=eos_id)
    if preset.arch == "llama":
        return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return AutoModelForCausalLM.from_config(config)


class LossModel(nn.Module):
    """`forward(window) -> mean next-token loss`; the parameters are the wrapped model's.

    transformers' GPT-Neo only has an eager attention (fp32 scores, a materialised mask and
    softmax). For training we run the same weights through `scaled_dot_product_attention`,
    which picks flash / memory-efficient kernels; the saved model is a plain GPT-Neo.
    """

    def __init__(self, model: PreTrainedModel, *, fast_attention: bool = True) -> None:
        super().__init__()
        self.model = model
        self.fast = fast_attention and model.config.model_type == "gpt_neo"

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        x, y = window[:, :-1], window[:, 1:]
        if self.fast:
            logits = self._neo_logits(x)
        else:
            logits = self.model(input_ids=x, use_cache=False).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))

    def _neo_logits(self, x: torch.Tensor) -> torch.Tensor:
        t = self.model.transformer
        batch, seq = x.shape
        h = t.wte(x) + t.wpe(torch.arange(seq, device=x.device))
        for block in t.h:
            attn = block.attn.attention
            a = block.ln_1(h)
            heads, dim = attn.num_heads, attn.head_dim
            q, k, v = (
                p(a).view(batch, seq, heads, dim).transpose(1, 2)
                for p in (attn.q_proj, attn.k_proj, attn.v_proj)
            )
            # GPT-Neo does not scale scores by 1/sqrt(d): scale=1 keeps the saved model exact.
            if attn.attention_type == "global" or seq <= self.model.config.window_size:
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
            else:
                mask = attn.bias[0, 0, :seq, :seq]  # causal band of window_size tokens
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
            h = h + attn.out_proj(o.transpose(1, 2).reshape(batch, seq, heads * dim))
            h = h + block.mlp(block.ln_2(h))
        return self.model.lm_head(t.ln_f(h))


def flops_per_token(model: PreTrainedModel, *, non_embedding_params: int, seq_len: int) -> float:
    """Training FLOPs per token (PaLM appendix B): 6N + 12 L d T, N including the output matmul."""
    cfg = model.config
    layers = getattr(cfg, "num_layers", None) or cfg.num_hidden_layers
    n = non_embedding_params + cfg.vocab_size * cfg.hidden_size
    return 6.0 * n + 12.0 * layers * cfg.hidden_size * seq_len


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of known accelerators, for the MFU estimate."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in (
        ("H200", 989e12),
        ("H100", 989e12),
        ("A100", 312e12),
        ("L4", 121e12),
        ("A10", 125e12),
        ("4090", 165e12),
        ("V100", 125e12),
    ):
        if key in name:
            return flops
    return None
