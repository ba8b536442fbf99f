"""Progress off a terminal: periodic lines with done/total, rate and ETA, then a final line."""

from __future__ import annotations

import io
import re

import pytest

from generator.progress import Progress, format_rate


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_it_writes_lines_with_rate_and_eta() -> None:
    out = io.StringIO()
    with Progress("export", total=4, unit="stories", every_s=0.0, stream=out) as progress:
        for _ in range(4):
            progress.advance()
    lines = out.getvalue().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert lines[0].startswith("export: 1/4 (25%) ") and "stories/s" in lines[0]
    assert "eta " in lines[0] and "eta " not in lines[-1]
    assert lines[-1].startswith("export: 4/4 in 0:00:00 (") and "stories/s)" in lines[-1]


def test_lines_are_spaced_by_the_interval_and_total_may_come_late() -> None:
    out = io.StringIO()
    with Progress("import", unit="records", every_s=3600.0, stream=out) as progress:
        for _ in range(1000):
            progress.advance()
        progress.update(1500, total=2000)
    # A run shorter than the interval writes nothing: the command's own summary says it all.
    assert out.getvalue() == ""
    line = progress.line()
    assert line.startswith("import: 1,500/2,000 (75%)") and "records/s" in line


def test_on_a_terminal_it_draws_a_bar_and_no_log_lines() -> None:
    out = FakeTty()
    with Progress("train", total=10, unit="steps", every_s=0.0, stream=out) as progress:
        progress.advance(10)
    text = out.getvalue()
    assert "train" in text and "10/10" in text and "steps/s" in text
    assert " in 0:00:00 (" not in text


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_final_rate_is_the_work_done_over_the_whole_run() -> None:
    # 10 stories done in 20 ms, then 6.5 minutes before the run ends: the bar must not stay
    # at the 500/s it showed when the last story came in.
    clock, out = FakeClock(), FakeTty()
    with Progress("generate", total=10, unit="stories", stream=out, clock=clock) as progress:
        clock.now += 0.02
        progress.advance(10)
        clock.now += 390.0
    assert progress.elapsed_s() == pytest.approx(390.02)
    assert progress.rate() == pytest.approx(10 / 390.02)
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).split("\r")[-1]
    assert "10/10" in final
    assert "1.5 stories/min" in final and "500" not in final
    clock.now += 100.0  # after the exit the run's figures stay fixed
    assert progress.elapsed_s() == pytest.approx(390.02)


def test_off_a_terminal_the_final_line_states_the_same_rate() -> None:
    clock, out = FakeClock(), io.StringIO()
    with Progress("generate", total=10, unit="stories", stream=out, every_s=0, clock=clock) as p:
        clock.now += 1.0
        p.advance(5)
        clock.now += 799.0
        p.advance(5)
    assert out.getvalue().splitlines()[-1] == "generate: 10/10 in 0:13:20 (0.8 stories/min)"


@pytest.mark.parametrize(
    ("per_s", "text"),
    [
        (445.8, "445.8 stories/s"),
        (0.1, "0.1 stories/s"),
        (10 / 390, "1.5 stories/min"),
        (1 / 3600, "1.0 stories/h"),
        (0.0, "0.0 stories/s"),
    ],
)
def test_slow_rates_are_stated_in_a_readable_unit(per_s: float, text: str) -> None:
    assert format_rate(per_s, "stories") == text
