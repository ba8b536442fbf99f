"""The model: a transformers causal LM plus a fast training forward that returns the loss."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from trainer.attention import (
    Backend,
    causal_attention,
    flash_local_attention,
    flash_matches_band_mask,
    flash_window_supported,
    sliding_block_mask,
)
from trainer.config import OptionError, TrainerError
from trainer.device import resolve_device
from trainer.presets import Preset, build_config
from trainer.xent import IGNORE, linear_cross_entropy

log = logging.getLogger(__name__)
# Flash (bf16 in and out) against the fp32 band-mask reference on the same bf16 inputs: 0.0035
# on an H100; a window one token off gives 0.49-0.62 with 4-token windows (0.03 with 256).
FLASH_TOLERANCE = 0.05

__all__ = ["IGNORE", "LossModel", "build_model", "flops_per_token", "resolve_device"]


def build_model(
    preset: Preset, *, vocab_size: int, eos_id: int, seed: int, context: int | None = None
) -> PreTrainedModel:
    """A freshly initialised float32 model with `context` positions (the trained seq_len).

    The saved config's max_position_embeddings is what every consumer trusts: positions the run
    never trains on must not be in it. The seed fixes the initial weights.
    """
    torch.manual_seed(seed)
    config = build_config(preset, vocab_size=vocab_size, eos_id=eos_id, context=context)
    if preset.arch == "llama":
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    else:
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id
    # No max_length here: transformers 5 warns on every call that passes max_new_tokens then.
    return model


class LossModel(nn.Module):
    """`forward(inputs, targets) -> summed next-token NLL`; the parameters are the wrapped model's.

    transformers' GPT-Neo only has an eager attention (fp32 scores, a materialised mask and
    softmax). For training we run the same weights through `trainer.attention` (flash kernels;
    a flash or FlexAttention sliding window for local layers), and every model's output layer
    through the chunked cross-entropy of `trainer.xent`; the saved model is the plain
    transformers one.
    """

    def __init__(self, model: PreTrainedModel, *, fast_attention: bool = True) -> None:
        super().__init__()
        self.model = model
        self.fast = fast_attention and model.config.model_type == "gpt_neo"
        self.local: Backend = "sdpa"  # kernel of the local (sliding-window) layers
        self.block_mask = None
        self.flex_seq = 0
        self.residual_bf16 = False  # under autocast, the stream between blocks in its dtype

    def use_flex(self, seq: int, device: torch.device) -> None:
        """Run local layers of `seq`-token windows through FlexAttention (compiled CUDA runs)."""
        if self.fast and seq > self.model.config.window_size:
            self.block_mask = sliding_block_mask(seq, self.model.config.window_size, device)
            self.flex_seq, self.local = seq, "flex"

    def use_flash(self) -> None:
        """Run local layers through the flash varlen kernel's sliding window (bf16/fp16 CUDA)."""
        if self.fast:
            self.no_flex()
            self.local = "flash"

    def pick_local(
        self, kind: str, *, seq: int, device: torch.device, compiled: bool, bf16: bool
    ) -> str:
        """Choose the local layers' kernel (`auto`, `flash`, `flex` or `sdpa`); returns it.

        `auto` on CUDA: flash (bf16 runs) when torch has the windowed varlen kernel and it
        matches the band mask on this card (checked here, off-by-one included, with a 4-token
        window too), else FlexAttention when compiling, else SDPA with the band mask.
        """
        cuda = device.type == "cuda"
        if kind in ("flash", "flex") and not cuda:
            raise TrainerError(f"local_attention {kind} trains on CUDA only")
        if kind == "flash" and not bf16:
            raise OptionError("local_attention flash needs bf16 (the kernel has no fp32 path)")
        if not self.fast or kind == "sdpa" or not cuda:
            return self.attention_backend
        window, cfg = self.model.config.window_size, self.model.config
        if kind == "flash" or (kind == "auto" and bf16):
            if flash_window_supported(device):
                dim = cfg.hidden_size // cfg.num_heads
                diff = max(flash_matches_band_mask(device, w, dim) for w in (4, window))
                if diff <= FLASH_TOLERANCE:
                    self.use_flash()
                    return self.attention_backend
                reason = f"differs from the band mask on this card (relative {diff:.3f})"
            else:
                reason = f"needs torch >= 2.11 (this is {torch.__version__})"
            if kind == "flash":
                raise TrainerError(f"local_attention flash {reason}")
            log.warning("flash sliding-window attention %s; using another kernel", reason)
        if kind == "flex" or compiled:
            self.use_flex(seq, device)
        return self.attention_backend

    def no_flex(self) -> None:
        self.block_mask, self.flex_seq, self.local = None, 0, "sdpa"

    @property
    def local_state(self) -> tuple[Any, ...]:
        return self.local, self.block_mask, self.flex_seq

    @local_state.setter
    def local_state(self, state: tuple[Any, ...]) -> None:
        self.local, self.block_mask, self.flex_seq = state

    @property
    def attention_backend(self) -> str:
        if not self.fast:
            return "transformers"
        return f"sdpa+{self.local}" if self.local != "sdpa" else "sdpa"

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.fast:
            hidden = self._neo_hidden(inputs)
        else:
            hidden = self.model.base_model(input_ids=inputs, use_cache=False).last_hidden_state
        weight = self.model.get_output_embeddings().weight
        return linear_cross_entropy(
            hidden.reshape(-1, hidden.size(-1)), weight, targets.reshape(-1)
        )

    def mean_loss(self, window: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of full (batch, seq + 1) windows."""
        x, y = window[:, :-1], window[:, 1:]
        return self(x, y) / y.numel()

    def _neo_hidden(self, x: torch.Tensor) -> torch.Tensor:
        t = self.model.transformer
        batch, seq = x.shape
        h = t.wte(x) + t.wpe(torch.arange(seq, device=x.device))
        if self.residual_bf16 and torch.is_autocast_enabled(x.device.type):
            # The adds below then stay in the autocast dtype; layer norms still compute in fp32.
            h = h.to(torch.get_autocast_dtype(x.device.type))
        window = self.model.config.window_size
        flex = self.block_mask if seq == self.flex_seq else None
        for block in t.h:
            attn = block.attn.attention
            a = block.ln_1(h)
            heads, dim = attn.num_heads, attn.head_dim
            q, k, v = (
                p(a).view(batch, seq, heads, dim) for p in (attn.q_proj, attn.k_proj, attn.v_proj)
            )
            # GPT-Neo does not scale scores by 1/sqrt(d): every kernel here keeps scale 1.
            # The outer module's attribute: transformers 4.x has none on the inner one.
            local = window if block.attn.attention_type == "local" else None
            if local and seq > local and self.local == "flash" and q.dtype != torch.float32:
                o = flash_local_attention(q, k, v, window=local)  # (batch, seq, heads, dim)
            else:
                o = causal_attention(
                    *(x.transpose(1, 2) for x in (q, k, v)), window=local, block_mask=flex
                ).transpose(1, 2)
            h = h + attn.out_proj(o.reshape(batch, seq, heads * dim))
            h = h + block.mlp(block.ln_2(h))
        return t.ln_f(h)


def flops_per_token(model: PreTrainedModel, *, non_embedding_params: int, seq_len: int) -> float:
    """Training FLOPs per token (PaLM appendix B): 6N + 12 L d T, N including the output matmul."""
    cfg = model.config
    layers = getattr(cfg, "num_layers", None) or cfg.num_hidden_layers
    n = non_embedding_params + cfg.vocab_size * cfg.hidden_size
    return 6.0 * n + 12.0 * layers * cfg.hidden_size * seq_len
