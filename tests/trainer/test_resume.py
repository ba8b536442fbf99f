"""Resuming: --no-resume starts over, a checkpoint of another plan is refused, a time-limited
run resumes on the same learning-rate curve, and Ctrl-C leaves a checkpoint to resume."""

import os
import signal
import subprocess
import sys
import textwrap
import types
from dataclasses import replace
from pathlib import Path

import pytest

import trainer.stopping
import trainer.train
from tests.trainer.test_train import tiny_config
from trainer.checkpoint import latest_checkpoint
from trainer.config import TrainerError
from trainer.data import WindowSampler
from trainer.stopping import Interrupted
from trainer.train import StepInfo, train

ROOT = Path(__file__).resolve().parents[2]


def steps_saved(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))


def test_no_resume_removes_the_earlier_runs_checkpoints(export_dir, cache_dir, tmp_path, caplog):
    kw = {"checkpoint_every": 5, "eval_every": 100, "log_every": 5, "keep_checkpoints": 2}
    out = tmp_path / "m"
    train(tiny_config(export_dir, cache_dir, out, max_steps=20, **kw))
    assert steps_saved(out) == [15, 20]
    with caplog.at_level("WARNING", logger="trainer.train"):
        train(tiny_config(export_dir, cache_dir, out, max_steps=10, resume=False, **kw))
    assert "removed 2 checkpoints of an earlier run" in caplog.text
    assert steps_saved(out) == [5, 10]  # only this run's: a plain rerun resumes step 10
    again = train(tiny_config(export_dir, cache_dir, out, max_steps=10, **kw))
    assert again.resumed_from == 10 and again.steps == 10


def test_resume_refuses_a_checkpoint_of_another_plan(export_dir, cache_dir, tmp_path) -> None:
    kw = {"checkpoint_every": 5, "eval_every": 100, "log_every": 5}
    out = tmp_path / "m"
    train(tiny_config(export_dir, cache_dir, out, max_steps=10, **kw))
    with pytest.raises(TrainerError, match=r"at step 10, past this run's 6 steps; use --no-resume"):
        train(tiny_config(export_dir, cache_dir, out, max_steps=6, **kw))
    with pytest.raises(TrainerError, match="planned for 10 steps, this one for 20: the cosine"):
        train(tiny_config(export_dir, cache_dir, out, max_steps=20, **kw))
    with pytest.raises(TrainerError, match=r"another config \(grad_clip 1.0 != 0.5\)"):
        train(tiny_config(export_dir, cache_dir, out, max_steps=10, grad_clip=0.5, **kw))
    # A constant rate has no horizon to jump: such a run may be extended.
    out_c = tmp_path / "c"
    train(tiny_config(export_dir, cache_dir, out_c, max_steps=5, schedule="constant", **kw))
    longer = train(tiny_config(export_dir, cache_dir, out_c, max_steps=8, schedule="constant"))
    assert longer.resumed_from == 5 and longer.steps == 8


class FakeClock:
    """One second per training batch: the time limit's plan is the same on every run."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def test_time_limited_run_resumes_on_the_same_lr_curve(
    export_dir, cache_dir, tmp_path, monkeypatch
) -> None:
    clock = FakeClock()
    fake_time = types.SimpleNamespace(perf_counter=clock.perf_counter)
    monkeypatch.setattr(trainer.train, "time", fake_time)
    monkeypatch.setattr(trainer.stopping, "time", fake_time)
    draw = WindowSampler.next

    def next_batch(self):
        clock.now += 1.0
        return draw(self)

    monkeypatch.setattr(WindowSampler, "next", next_batch)
    kw = {
        "max_steps": 10**6,
        "time_limit_s": 30.0,
        "warmup_steps": 8,
        "log_every": 4,
        "checkpoint_every": 8,
        "eval_every": 10**6,
        "final_eval_tokens": 1024,
    }

    def run(out: Path, kill_at: int | None = None) -> list[tuple[int, float]]:
        lrs: list[tuple[int, float]] = []

        def record(info: StepInfo) -> None:
            lrs.append((info.step, info.lr))
            if info.step == kill_at:
                raise RuntimeError("killed")

        train(tiny_config(export_dir, cache_dir, out, **kw), on_step=record)
        return lrs

    whole = dict(run(tmp_path / "whole"))
    assert len(whole) == 30  # one fake second per step
    rates = [whole[s] for s in sorted(whole)]
    assert rates[:8] == sorted(rates[:8])  # the planned warmup, not one re-derived
    assert rates[8:] == sorted(rates[8:], reverse=True)  # then only down: no jump back up
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "resumed", kill_at=19)
    assert steps_saved(tmp_path / "resumed")[-1] == 16
    resumed = run(tmp_path / "resumed")
    assert resumed[0][0] == 17 and resumed[-1][0] == 30
    assert resumed == [(s, whole[s]) for s in range(17, 31)]


def test_interrupt_from_a_hook_saves_the_step(export_dir, cache_dir, tmp_path) -> None:
    cfg = tiny_config(export_dir, cache_dir, tmp_path / "m", max_steps=12, checkpoint_every=100)

    def ctrl_c(info: StepInfo) -> None:
        if info.step == 7:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as caught:
        train(cfg, on_step=ctrl_c)
    assert caught.value.step == 7 and steps_saved(tmp_path / "m") == [7]
    assert train(cfg).resumed_from == 7


SCRIPT = """
import sys
from pathlib import Path
from tests.trainer.test_train import tiny_config
from trainer.stopping import Interrupted
from trainer.train import train

def ready(info):
    if info.step == 3:
        print("ready", flush=True)

cfg = tiny_config(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), max_steps=10**6,
                  checkpoint_every=10**6, eval_every=10**6, threads=1)
try:
    train(cfg, on_step=ready)
except Interrupted as exc:
    print(f"interrupted step={exc.step} saved={exc.saved}", flush=True)
"""


def test_ctrl_c_saves_a_checkpoint_of_the_last_whole_step(export_dir, cache_dir, tmp_path):
    out = tmp_path / "m"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(export_dir), str(cache_dir), str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        last = child.stdout.read().strip().splitlines()[-1]
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
    step = int(last.split("step=")[1].split()[0])
    assert step >= 3 and last.endswith(f"saved={out / 'checkpoints' / f'step-{step}'}")
    assert latest_checkpoint(out) == out / "checkpoints" / f"step-{step}"
    cfg = tiny_config(export_dir, cache_dir, out, max_steps=10**6)
    resumed = train(replace(cfg, max_steps=10**6, time_limit_s=0.0))
    assert resumed.resumed_from == step
