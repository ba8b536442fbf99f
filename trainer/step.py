"""One optimizer step's forward and backward: compile, its fallback and check, bf16, DDP."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from trainer.model import LossModel

log = logging.getLogger(__name__)
T = TypeVar("T")

# Compiled and eager gradients of one batch differ by ~1e-2 (bf16, other kernels); a broken
# graph by ~1.
GRAD_TOLERANCE = 0.1
LOSS_TOLERANCE = 0.01
# torch.compile options per TrainConfig.compile_mode. "tuned" benchmarks the fused pointwise and
# reduction kernels (the memory-bound quarter of a 33M step on an H100), not the GEMMs: GEMM
# autotuning (max-autotune) took over 6 minutes for 33M, once per cross-entropy chunk, and
# cuBLAS won every shape but the smallest. The "tuned" compile itself ran past 4.5 minutes for
# 33M on an H100: worth it only for long runs.
COMPILE_OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "tuned": {"max_autotune_pointwise": True, "coordinate_descent_tuning": True},
}


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class Stepper:
    """Accumulates `grad_accum` micro-batches into the gradients; keeps the loss on the device.

    With compile on, the first step runs compiled, then again eager on the same batch: a
    compiler that fails, or builds a graph whose loss or gradients differ from eager ones
    (torch 2.11 once trained nothing), costs speed, never the run: one warning line and the run
    continues eager (and SDPA instead of FlexAttention, which is slow uncompiled).
    """

    def __init__(
        self,
        lm: LossModel,
        train_lm: torch.nn.Module,
        *,
        device: torch.device,
        world: int,
        grad_accum: int,
        compile: bool,
        bf16: bool,
        compile_mode: str = "default",
        zero_grad: Callable[[], None],
    ) -> None:
        self.lm, self.train_lm, self.device, self.world = lm, train_lm, device, world
        self.grad_accum, self.bf16, self.zero_grad = grad_accum, bf16, zero_grad
        if compile:
            # Dynamo caches graphs per code object, not per model: every earlier run in this
            # process (a sweep, gpu_check) holds entries of LossModel.forward, and past 8 of them
            # it silently runs eager. This run's model needs none of them.
            torch._dynamo.reset()
        options = COMPILE_OPTIONS[compile_mode] or None
        self.forward: Callable = torch.compile(train_lm, options=options) if compile else train_lm
        self.eval_forward: Callable = lm
        if compile:
            self.eval_forward = self.forward if world == 1 else torch.compile(lm, options=options)
        self.to_check = compile
        self.loss_sum = torch.zeros((), device=device)
        self.micro_count = 0

    @property
    def compiled(self) -> bool:
        return self.forward is not self.train_lm

    def autocast(self) -> Any:
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def take_loss(self) -> float:
        """Mean micro-batch loss since the last call: reading it is the loop's only host sync."""
        loss = self.loss_sum.item() / max(self.micro_count, 1)
        self.loss_sum.zero_()
        self.micro_count = 0
        return loss

    def step(self, windows: list[torch.Tensor]) -> None:
        if not self.to_check:
            self._micro_steps(windows, self.forward)
            return
        self.to_check = False
        try:
            self._micro_steps(windows, self.forward)
        except Exception as exc:
            log.warning("compile failed, continuing without it: %s", _reason(exc))
            self.zero_grad()
            self.loss_sum.zero_()
            self._fall_back()
            self._micro_steps(windows, self.forward)
            return
        if not self._matches_eager(windows):  # its eager gradients are this step's
            self._fall_back()

    def evaluate(self, run: Callable[[Callable], T]) -> T:
        """`run(forward)` with the evaluation forward; a failing compiled one falls back."""
        self.lm.eval()
        try:
            with self.autocast():
                try:
                    return run(self.eval_forward)
                except Exception as exc:
                    if self.eval_forward is self.lm:
                        raise
                    log.warning(
                        "compile failed for evaluation, evaluating without it: %s", _reason(exc)
                    )
                    self.eval_forward = self.lm
                    return run(self.lm)
        finally:
            self.lm.train()

    def _fall_back(self) -> None:
        self.forward, self.eval_forward = self.train_lm, self.lm
        if self.lm.local == "flex":  # eager FlexAttention is slow; eager flash is not
            self.lm.no_flex()

    def _micro_steps(self, windows: list[torch.Tensor], forward: Callable) -> None:
        for micro, window in enumerate(windows):
            window = window.to(self.device, non_blocking=True)
            sync = (
                self.train_lm.no_sync()  # type: ignore[operator]
                if self.world > 1 and micro < len(windows) - 1
                else contextlib.nullcontext()
            )
            x, y = window[:, :-1], window[:, 1:]
            with sync, self.autocast():
                loss = forward(x, y) / y.numel()
            (loss / self.grad_accum).backward()
            self.loss_sum.add_(loss.detach())
        self.micro_count += len(windows)

    def _matches_eager(self, windows: list[torch.Tensor]) -> bool:
        """The first compiled step's loss and gradients against eager ones of the same batch.

        The step keeps the eager gradients either way.
        """
        params = [p for p in self.lm.parameters() if p.grad is not None]
        compiled_grads = [p.grad.detach().float().clone() for p in params]
        compiled_loss = self.loss_sum.item()
        self.zero_grad()
        self.loss_sum.zero_()
        self.micro_count -= len(windows)
        local = self.lm.local_state
        self.lm.no_flex()  # the reference is SDPA with the band mask, the tested eager path
        self._micro_steps(windows, self.train_lm)
        self.lm.local_state = local
        diff = sum(
            float(((p.grad.float() - g) ** 2).sum())
            for p, g in zip(params, compiled_grads, strict=True)
        )
        norm = sum(float((p.grad.float() ** 2).sum()) for p in params)
        grad_rel = math.sqrt(diff / max(norm, 1e-30)) if params else 1.0
        eager_loss = self.loss_sum.item()
        loss_rel = abs(compiled_loss - eager_loss) / max(abs(eager_loss), 1e-12)
        bad = grad_rel > GRAD_TOLERANCE or loss_rel > LOSS_TOLERANCE or not math.isfinite(grad_rel)
        if self.world > 1:  # every rank must take the same path
            flag = torch.tensor([float(bad)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            bad = bool(flag.item())
        log.info("compile check grad_rel_diff=%.2e loss_rel_diff=%.2e", grad_rel, loss_rel)
        if bad:
            log.warning(
                "compiled gradients differ from eager ones (relative difference %.2f); "
                "continuing without compile",
                grad_rel,
            )
        return not bad
