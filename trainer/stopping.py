"""When the training loop stops early: a time limit (and the schedule horizon it moves) or Ctrl-C.

Both are decided at step boundaries only, so what a checkpoint holds is always a whole step.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; `saved` is the checkpoint written for `step`, if any."""

    def __init__(self, step: int, saved: Path | None) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step = step
        self.saved = saved


class StopSignal:
    """While active, the first SIGINT only asks the loop to stop after the current step.

    The loop then saves a checkpoint of that step and raises `Interrupted`; a second Ctrl-C
    gets the previous handler back and stops at once. Signals reach the main thread only, so
    elsewhere (a thread running `train`) nothing is installed.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            # An ignored SIGINT (a background job of a non-interactive shell) stays ignored.
            if previous not in (signal.SIG_IGN, None):
                self._previous = previous
                signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)
        log.warning("interrupt: saving a checkpoint after this step (Ctrl-C again stops at once)")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class RunClock:
    """Training time across resumed invocations, and the schedule horizon a time limit aims at.

    The limit counts the run's whole training time (the checkpoint carries what earlier
    invocations used), so a killed run resumed by the same command stops, and anneals, where
    an uninterrupted one would.
    """

    def __init__(
        self,
        *,
        time_limit_s: float | None,
        max_steps: int,
        horizon: int,
        elapsed_before: float,
        start_step: int,
        world: int,
        device: torch.device,
    ) -> None:
        self.time_limit_s = time_limit_s
        self.max_steps = max_steps
        self.horizon = horizon
        self.elapsed_before = elapsed_before
        self.start_step = start_step
        self.world = world
        self.device = device
        self.calibration: tuple[int, float] | None = None  # (step, time) after the first window
        self.t_start = time.perf_counter()

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def check(self, step: int, *, logging_step: bool, interrupted: bool) -> str | None:
        """Before each step: "time_limit" or "interrupt" when the loop must stop, else None.

        At logging steps the horizon is re-aimed at the steps that fit, and several ranks agree
        on all three there (one small all-reduce where the loss is read anyway: no extra sync).
        """
        now = time.perf_counter()
        limit = self.time_limit_s
        over = limit is not None and self.elapsed_before + now - self.t_start >= limit
        if logging_step and limit is not None:
            self._replan(step, now, limit)
        if self.world > 1:
            if not logging_step:
                return None
            flags = torch.tensor(
                [float(over), float(interrupted), -float(self.horizon)], device=self.device
            )
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            over, interrupted = bool(flags[0].item()), bool(flags[1].item())
            self.horizon = int(-flags[2].item())
        if interrupted:
            return "interrupt"
        return "time_limit" if over else None

    def _replan(self, step: int, now: float, limit: float) -> None:
        if self.calibration is None:
            if step > self.start_step:  # first window done: compile time is behind us
                self.calibration = (step, now)
        elif step > self.calibration[0]:
            per_step = (now - self.calibration[1]) / (step - self.calibration[0])  # evals in
            left = limit - (self.elapsed_before + now - self.t_start)
            fit = step + int(left / per_step)
            self.horizon = max(step + 1, min(self.max_steps, fit))
