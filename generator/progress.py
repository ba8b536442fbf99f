"""Progress of a long command: a rich bar on a terminal, one line every few seconds elsewhere.

Off a terminal (nohup, `docker logs`, CI) a bar prints nothing until the end, so a five-minute
run looks hung. There, `Progress` writes `name: done/total (pct) rate/s eta H:MM:SS` to stderr
every `every_s` seconds instead. The generator, dataset, trainer and grader commands share it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import IO, Any

DEFAULT_EVERY_S = 10.0
EVERY_ENV = "TINYSTORIES_PROGRESS_SECONDS"  # seconds between lines off a terminal


def every_s_from_env() -> float:
    """Seconds between progress lines: TINYSTORIES_PROGRESS_SECONDS, else 10."""
    try:
        return max(0.0, float(os.environ.get(EVERY_ENV) or DEFAULT_EVERY_S))
    except ValueError:
        return DEFAULT_EVERY_S


def _eta(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def format_rate(per_s: float, unit: str) -> str:
    """A rate such as "12.3 stories/s"; a slow run in its own terms ("1.5 stories/min",
    "0.9 stories/h") rather than "0.0 stories/s"."""
    if per_s >= 0.1 or per_s <= 0:
        return f"{per_s:,.1f} {unit}/s"
    if per_s * 60 >= 0.1:
        return f"{per_s * 60:,.1f} {unit}/min"
    return f"{per_s * 3600:,.1f} {unit}/h"


class Progress:
    """Counts work done; shows it as a bar on a terminal, as periodic lines otherwise."""

    def __init__(
        self,
        name: str,
        total: int | None = None,
        *,
        unit: str = "items",
        every_s: float | None = None,
        stream: IO[str] | None = None,
        terminal: bool | None = None,
        start_at: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.total = total
        self.unit = unit
        self.every_s = every_s_from_env() if every_s is None else every_s
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.done = self._base = start_at  # a resumed run's rate counts this run's work only
        self.detail = ""  # appended to each line, e.g. "loss 2.31 val 2.40"
        self._clock = clock
        self._started = clock()
        self._ended: float | None = None  # set on exit: the final rate stays what it was
        self._last_line = self._started
        self._bar: Any = None
        self._lines = 0
        self._task: Any = None

    def __enter__(self) -> Progress:
        self._started = self._last_line = self._clock()
        if self.terminal:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn(f"[bold]{self.name}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.name, total=self.total, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        self._ended = self._clock()
        if self._bar is not None:
            # The bar's last rate is over the whole run, not as of the last unit done: a run
            # that finished its work quickly and then waited shows the slower, true figure.
            self._bar.update(self._task, rate=format_rate(self.rate(), self.unit))
            self._bar.__exit__(*exc)
        elif exc[0] is None and self._lines:
            # Closes a run that showed progress lines; a short run stays quiet (the command
            # prints its own summary or error line).
            self._write_line(final=True)

    def elapsed_s(self) -> float:
        """Seconds since the start, up to the exit once the run is over."""
        return (self._ended if self._ended is not None else self._clock()) - self._started

    def rate(self) -> float:
        """Units per second: this run's work done over the time since the start."""
        return (self.done - self._base) / max(self.elapsed_s(), 1e-9)

    def update(self, done: int, total: int | None = None, detail: str | None = None) -> None:
        """Set the absolute count (and the total, when it becomes known, or changes)."""
        if total is not None:
            self.total = total
        if detail is not None:
            self.detail = detail
        self.advance(done - self.done)

    def advance(self, n: int = 1) -> None:
        """Count n more units done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=self.done,
                total=self.total,
                rate=format_rate(self.rate(), self.unit),
            )
            return
        now = self._clock()
        if now - self._last_line >= self.every_s and (not self.total or self.done < self.total):
            self._last_line = now
            self._write_line()

    def line(self) -> str:
        """The periodic line: name, done/total, share, rate and ETA."""
        rate = self.rate()
        parts = [f"{self.name}: {self.done:,}"]
        if self.total:
            parts[0] += f"/{self.total:,} ({100 * self.done / self.total:.0f}%)"
        parts.append(format_rate(rate, self.unit))
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"eta {_eta((self.total - self.done) / rate)}")
        if self.detail:
            parts.append(self.detail)
        return " ".join(parts)

    def _write_line(self, *, final: bool = False) -> None:
        elapsed = _eta(self.elapsed_s())
        self._lines += 1
        if final:
            line = f"{self.name}: {self.done:,}"
            if self.total:
                line += f"/{self.total:,}"
            line += f" in {elapsed} ({format_rate(self.rate(), self.unit)})"
        else:
            line = self.line()
        self.stream.write(line + "\n")
        self.stream.flush()
