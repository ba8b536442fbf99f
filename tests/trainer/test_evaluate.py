"""The shared validation loss / bits-per-byte definition (trainer.evaluate, grader.loss)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer.test_train import tiny_config
from trainer.evaluate import evaluate_stream, window_starts
from trainer.train import train


@pytest.fixture(scope="module")
def run(export_dir: Path, cache_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "model"
    train(tiny_config(export_dir, cache_dir, out, max_steps=12, eval_every=100))
    return out


def test_trainer_and_grader_report_the_same_loss_and_bits_per_byte(run: Path, export_dir) -> None:
    from datasets import load_from_disk

    from grader.loss import evaluate_loss
    from grader.models import load_model

    info = json.loads((run / "training.json").read_text())
    assert not info["validation_sampled"]  # the final pass scores the whole split
    texts = list(load_from_disk(str(export_dir))["validation"]["text"])
    graded = evaluate_loss(load_model(run), texts, batch_size=3)
    assert graded["context_length"] == info["context_length"] == 64
    assert graded["tokens"] == info["validation_tokens_scored"] == info["validation_tokens"]
    assert graded["loss"] == pytest.approx(info["final_val_loss"], rel=1e-5)
    assert graded["bits_per_byte"] == pytest.approx(info["bits_per_byte"], rel=1e-5)
    assert graded["bytes"] == sum(len(t.encode()) for t in texts)


def nll_of(logits_per_token: float):
    """A stand-in model: every scored token costs the same, so sums are easy to predict."""

    def nll(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (targets != -100).sum().to(torch.float32) * logits_per_token

    return nll


def test_every_token_after_the_first_is_scored_once() -> None:
    stream = np.arange(23, dtype=np.int64)
    starts = window_starts(23, 5, max_windows=None, seed=0)
    assert starts.tolist() == [0, 5, 10, 15, 20]  # the last window predicts 2 tokens
    seen: list[int] = []

    def record(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        assert inputs.shape == targets.shape == (2, 5)  # one shape, padded: compile-friendly
        seen.extend(t for t in targets.flatten().tolist() if t != -100)
        return torch.zeros(())

    evaluate_stream(record, stream, context=5, n_bytes=10, batch_size=2, device=torch.device("cpu"))
    assert sorted(seen) == list(range(1, 23))
    v = evaluate_stream(
        nll_of(math.log(2)), stream, context=5, n_bytes=11, batch_size=2, device=torch.device("cpu")
    )
    assert v.tokens == 22 and v.loss == pytest.approx(math.log(2)) and not v.sampled
    assert v.bits_per_byte == pytest.approx(22 / 11)


def test_sample_is_seeded_and_ranks_split_the_windows(monkeypatch) -> None:
    stream = np.arange(1001, dtype=np.int64)
    cpu = torch.device("cpu")
    a = window_starts(1001, 10, max_windows=7, seed=3)
    assert a.tolist() == window_starts(1001, 10, max_windows=7, seed=3).tolist()
    assert a.tolist() == sorted(a.tolist()) and len(set(a.tolist())) == 7
    sampled = evaluate_stream(
        nll_of(1.0), stream, context=10, n_bytes=2000, batch_size=4, device=cpu, max_windows=7
    )
    assert sampled.sampled and sampled.tokens == 70 and sampled.bytes == pytest.approx(140)

    reduced: list[torch.Tensor] = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: reduced.append(t.clone()))
    for rank in (0, 1):
        evaluate_stream(
            nll_of(1.0), stream, context=10, n_bytes=2000, batch_size=4, device=cpu,
            rank=rank, world=2,
        )  # fmt: skip
    assert [int(t[1]) for t in reduced] == [500, 500]  # each rank scores half the windows
