"""Progress off a terminal: periodic lines with done/total, rate and ETA, then a final line."""

from __future__ import annotations

import io

from generator.progress import Progress


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
