"""`make run` end to end on a small scale: service job, export, training, samples, grading."""

import os
import subprocess
import sys
import time
from pathlib import Path

import datasets
from transformers import AutoModelForCausalLM


def test_demo_runs_every_stage_and_leaves_nothing_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DATABASE_URL"))}
    env["TINYSTORIES_HOME"] = str(tmp_path / "home")
    args = ["demo", "--n-stories", "40", "--train-seconds", "8"]
    args += ["--grade-prompts", "2", "--grade-k", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "tinystories", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "demo: status=completed stories=40" in output
    assert "LLM SIMULATOR" in output

    demo = tmp_path / "home" / "demo"
    exported = datasets.load_from_disk(str(demo / "export"))
    assert exported["train"].num_rows + exported["validation"].num_rows == 40
    assert AutoModelForCausalLM.from_pretrained(demo / "model").num_parameters() > 0
    report = (demo / "report" / "report.md").read_text()
    assert "grammar" in report.lower()

    # Nothing started for the demo (database, simulator, API, worker) outlives it.
    deadline = time.monotonic() + 15
    while True:
        left = subprocess.run(
            ["pgrep", "-af", str(tmp_path / "home")], capture_output=True, text=True, check=False
        ).stdout.strip()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if left:
        log = tmp_path / "home" / "pg" / "data" / "server.log"
        events = [
            line
            for line in (log.read_text().splitlines() if log.exists() else [])
            if "ready to accept" in line or "shut" in line or "received" in line
        ]
        raise AssertionError(f"left running: {left}\nserver events: {events}\n{output[-2000:]}")
