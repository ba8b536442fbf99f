"""AdamW with decoupled weight decay on matrices, and the warmup + cosine schedule."""

from __future__ import annotations

import math

import torch

from trainer.config import TrainConfig


def warmup_for(cfg: TrainConfig, max_steps: int) -> int:
    """Warmup steps of a run planned for `max_steps`, fixed at its start."""
    # Short runs keep most of their steps at full rate: warmup is capped at 10% of the run.
    return max(1, min(cfg.warmup_steps, max_steps // 10))


def lr_factor(step: int, cfg: TrainConfig, max_steps: int, *, warmup: int | None = None) -> float:
    """Linear warmup, then cosine down to min_lr_ratio (or flat) at `max_steps`.

    The training loop passes the warmup it fixed at the start: a time limit moves `max_steps`
    (the horizon) while the run goes, and a warmup re-derived from it would make the rate jump.
    """
    if warmup is None:
        warmup = warmup_for(cfg, max_steps)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Decay matrices (incl. embeddings, as nanoGPT); biases and LayerNorm gains stay free.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kwargs = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps}
    try:  # one fused kernel per step instead of a loop over tensors
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, **kwargs)
