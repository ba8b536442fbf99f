"""Causal attention for the training forward of GPT-Neo's global and local (sliding-window) layers.

Global layers go through `scaled_dot_product_attention(is_causal=True)`: flash kernels on GPU.
SDPA has no window argument, so an explicit band mask would push local layers onto the slower
masked kernels; with `flex`, local layers run FlexAttention with a sliding-window block mask,
a fused kernel that also skips the blocks wholly outside the window (needs torch.compile to be
fast, so `auto` picks it only for compiled CUDA runs).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

Backend = Literal["sdpa", "flex"]


def band_mask(seq: int, window: int, device: torch.device) -> torch.Tensor:
    """GPT-Neo's local mask: query i sees keys j with i - window < j <= i (True = attend)."""
    i = torch.arange(seq, device=device)[:, None]
    j = torch.arange(seq, device=device)[None, :]
    return (j <= i) & (i - j < window)


def sliding_block_mask(seq: int, window: int, device: torch.device) -> Any:
    """FlexAttention block mask of the same band, built once per run (it is not free)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def sliding(_b: Any, _h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return (kv_idx <= q_idx) & (q_idx - kv_idx < window)

    return create_block_mask(sliding, B=None, H=None, Q_LEN=seq, KV_LEN=seq, device=str(device))


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    window: int | None,
    block_mask: Any = None,
) -> torch.Tensor:
    """(batch, heads, seq, dim) attention without 1/sqrt(d) scaling, as GPT-Neo computes it.

    `window` None is a global layer; `block_mask` (from sliding_block_mask) selects FlexAttention.
    """
    seq = q.shape[-2]
    if window is None or seq <= window:  # the band covers every earlier token: plain causal
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
    if block_mask is None:
        mask = band_mask(seq, window, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    return _flex(q, k, v, block_mask)


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: Any) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    dim = q.shape[-1]
    padded = 1 << (dim - 1).bit_length()
    if padded != dim:
        # Flex kernels want power-of-two head sizes (33M has 48): zero columns add nothing to
        # q.k scores, and the zero value columns are sliced off again.
        q, k, v = (F.pad(t, (0, padded - dim)) for t in (q, k, v))
    if q.device.type == "cpu":  # inductor's CPU flex template wants dense 4-d inputs
        q, k, v = (t.contiguous() for t in (q, k, v))
    out = flex_attention(q, k, v, block_mask=block_mask, scale=1.0)
    return out[..., :dim] if padded != dim else out
