"""Two CPU ranks under torchrun (gloo): data prepared before the process group, validation
split across ranks and summed to the whole-split figure a single process reports."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from tests.trainer.test_train import tiny_config
from trainer.train import train

export, cache, out = sys.argv[1:4]
train(tiny_config(export, cache, out, max_steps=4, eval_every=2, log_every=2, device="cpu"))
"""


def test_two_ranks_train_and_split_validation(export_dir: Path, tmp_path: Path) -> None:
    from datasets import load_from_disk

    from grader.loss import evaluate_loss
    from grader.models import load_model

    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    cache, out = tmp_path / "cache", tmp_path / "model"  # a fresh cache: both ranks race for it
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*torchrun, str(script), str(export_dir), str(cache), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "training.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == 4
    assert info["tokens_seen"] == 4 * 8 * 64 * 2
    assert (out / "checkpoints" / "step-4" / "rng-rank1.pt").is_file()
    assert len(list((cache / "tokenizers").iterdir())) == 1  # trained once, under the lock
    # Each rank scored half the windows; the reduced figure is the whole split's.
    texts = list(load_from_disk(str(export_dir))["validation"]["text"])
    graded = evaluate_loss(load_model(out), texts)
    assert graded["tokens"] == info["validation_tokens_scored"]
    assert abs(graded["loss"] - info["final_val_loss"]) < 1e-5
