"""Causal attention for the training forward of GPT-Neo's global and local (sliding-window) layers.

Global layers go through `scaled_dot_product_attention(is_causal=True)`: flash kernels on GPU.
SDPA has no window argument, so an explicit band mask would push local layers onto the slower
masked kernels. On CUDA two fused kernels take the window instead:
- `flash`: torch's flash-attention varlen kernel with a sliding window (torch >= 2.11, bf16 or
  fp16): any head size that is a multiple of 8 (33M's 48 unpadded), fast compiled or not;
- `flex`: FlexAttention with a sliding-window block mask, which skips the blocks wholly outside
  the window but pads head sizes to a power of two and is slow uncompiled.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F

Backend = Literal["sdpa", "flex", "flash"]


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


def flash_window_supported(device: torch.device) -> bool:
    """Whether torch's flash varlen kernel takes a sliding window here (CUDA, torch >= 2.11)."""
    if device.type != "cuda":
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return False
    return "window_size" in inspect.signature(varlen_attn).parameters


def flash_local_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int
) -> torch.Tensor:
    """GPT-Neo's local attention on (batch, seq, heads, dim) bf16/fp16 tensors, same layout out.

    Every window of the batch is one sequence of the varlen kernel; flash's left window counts
    the keys before the query, GPT-Neo's window includes the query itself (hence window - 1).
    """
    from torch.nn.attention.varlen import varlen_attn

    batch, seq, heads, dim = q.shape
    cu = torch.arange(0, (batch + 1) * seq, seq, dtype=torch.int32, device=q.device)
    packed = [t.reshape(batch * seq, heads, dim) for t in (q, k, v)]
    out = varlen_attn(*packed, cu, cu, seq, seq, scale=1.0, window_size=(window - 1, 0))
    return out.view(batch, seq, heads, dim)


def flash_matches_band_mask(device: torch.device, window: int, dim: int) -> float:
    """Largest relative difference of flash_local_attention's output and input gradients from
    SDPA with the band mask (fp32, same bf16 inputs): the window semantics checked on the card.
    """
    gen = torch.Generator(device=device).manual_seed(0)
    seq = 2 * window + 8
    shape = (2, seq, 4, dim)
    q, k, v = (
        (torch.randn(shape, generator=gen, device=device) / dim**0.25).to(torch.bfloat16)
        for _ in range(3)
    )
    grad = torch.randn(shape, generator=gen, device=device)
    results = []
    for flash in (True, False):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        if flash:
            out = flash_local_attention(*leaves, window=window).float()
        else:
            qf, kf, vf = (t.float().transpose(1, 2) for t in leaves)
            mask = band_mask(seq, window, device)
            out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=1.0)
            out = out.transpose(1, 2)
        out.backward(grad)
        results.append([out.detach(), *(t.grad.float() for t in leaves)])
    return max(
        float((a - b).norm() / b.norm().clamp_min(1e-12)) for a, b in zip(*results, strict=True)
    )


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
