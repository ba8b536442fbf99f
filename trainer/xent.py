"""Cross-entropy of the output layer, chunked over rows: fp32 logits exist one chunk at a time.

The usual `cross_entropy(lm_head(h).float(), y)` holds batch x seq x vocab logits in the compute
dtype, an fp32 copy, and an fp32 softmax for backward. Here each chunk's logits are made, turned
into its loss and (when training) its gradients with respect to the hidden states and the output
matrix, then dropped: peak extra memory is one chunk of fp32 logits, and no logit is kept for
backward. FLOPs are the same as the plain path (three matmuls per chunk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # target value of padding (grader windows, the last validation window)
CHUNK_ELEMENTS = 1 << 25  # fp32 logits per chunk: 128 MiB whatever the vocabulary
# The output matmuls run on a classifier padded with zero rows to a multiple of 64: a trained
# vocabulary such as 6,284 is not a multiple of 8, which keeps bf16 GEMMs off their fast
# tensor-core kernels (nanoGPT's 50257 -> 50304). Padded columns are cut before the softmax.
ALIGN = 64


def _chunk_rows(vocab: int) -> int:
    return max(256, CHUNK_ELEMENTS // vocab)


def _aligned(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    w = weight.to(dtype)
    pad = -w.shape[0] % ALIGN if w.is_cuda else 0  # CPU GEMMs gain nothing from it
    return F.pad(w, (0, 0, 0, pad)) if pad else w


def _chunk_nll(hc: torch.Tensor, weight: torch.Tensor, tc: torch.Tensor, vocab: int):
    logits = (hc @ weight.t())[:, :vocab].float()
    lse = torch.logsumexp(logits, dim=-1)
    valid = tc != IGNORE
    target = tc.clamp(min=0)
    picked = logits.gather(1, target[:, None]).squeeze(1)
    return logits, lse, valid, target, ((lse - picked) * valid).sum()


def _logit_grad(
    logits: torch.Tensor,
    lse: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    *,
    in_place: bool,
) -> torch.Tensor:
    """d nll / d logits = softmax - one_hot(target), zero on ignored rows.

    Eager, it reuses the chunk's logits buffer (a third fewer passes over it on a CPU); under
    compile the fused kernel gains nothing from that, and out of place keeps clear of
    pytorch#180642 (see below).
    """
    minus_one = -torch.ones_like(lse)[:, None]
    if in_place:
        g = logits.sub_(lse[:, None]).exp_()
        return g.scatter_add_(1, target[:, None], minus_one).mul_(valid[:, None])
    g = torch.exp(logits - lse[:, None]).scatter_add(1, target[:, None], minus_one)
    return g * valid[:, None]


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed NLL of `hidden @ weight.T` against `targets`; gradients made in the forward pass.

    No in-place op on anything it returns: torch 2.11's compile routes the gradient of such a
    Function to the wrong output (pytorch#180642), which trained nothing on our first GPU run.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets):  # type: ignore[override]
        vocab = weight.shape[0]
        w = _aligned(weight, hidden.dtype)  # compute dtype; the gradient is summed in fp32
        rows = _chunk_rows(vocab)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        grad_h = []
        eager = not torch.compiler.is_compiling()
        for s in range(0, hidden.shape[0], rows):
            hc, tc = hidden[s : s + rows], targets[s : s + rows]
            logits, lse, valid, target, nll = _chunk_nll(hc, w, tc, vocab)
            total = total + nll
            g = _logit_grad(logits, lse, target, valid, in_place=eager).to(hidden.dtype)
            pad = w.shape[0] - vocab
            g = F.pad(g, (0, pad)) if pad else g
            grad_h.append(g @ w)
            if eager:
                grad_w.add_((g.t() @ hc).float())
            else:
                grad_w = grad_w + (g.t() @ hc).float()
        ctx.save_for_backward(torch.cat(grad_h), grad_w[:vocab].to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Summed next-token NLL (fp32) of rows `hidden` (N, d) under classifier `weight` (V, d).

    Under autocast the matmuls run in its dtype (bf16 on GPU), the softmax in fp32.
    """
    dtype = hidden.dtype
    if torch.is_autocast_enabled(hidden.device.type):
        dtype = torch.get_autocast_dtype(hidden.device.type)
    h = hidden.to(dtype)
    with torch.autocast(hidden.device.type, enabled=False):
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            return _LinearCrossEntropy.apply(h, weight, targets)
        vocab, w = weight.shape[0], _aligned(weight, dtype)
        rows = _chunk_rows(vocab)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, h.shape[0], rows):
            total = total + _chunk_nll(h[s : s + rows], w, targets[s : s + rows], vocab)[-1]
        return total
