"""What a run leaves besides weights: metrics CSV, curves PNG, model card, training.json."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class StepInfo:
    """What `train(on_step=...)` gets after each optimizer step."""

    step: int
    max_steps: int  # the schedule's horizon (a time limit moves it to the steps that fit)
    loss: float | None  # set on logging steps only (reading it syncs the device)
    val_loss: float | None
    tokens_per_s: float | None
    lr: float


@dataclass
class TrainResult:
    """What `train` returns: the run's figures (training.json holds them and more)."""

    out: Path
    steps: int
    tokens_seen: int
    train_loss: float | None
    val_loss: float
    bits_per_byte: float
    tokens_per_s: float  # this invocation's average, compile and first steps included
    mfu: float | None
    elapsed_s: float
    stopped: str  # max_steps | time_limit
    resumed_from: int | None
    params: int
    params_non_embedding: int
    steady_tokens_per_s: float | None = None  # after the first logging window (compile, warmup)
    steady_mfu: float | None = None
    peak_memory_bytes: int | None = None  # CUDA only
    vocab_note: str | None = None  # why the tokenizer is smaller than asked
    rejected_note: str | None = None  # rejected stories of the export left out (or trained on)


METRIC_FIELDS = (
    "step",
    "tokens",
    "train_loss",
    "val_loss",
    "lr",
    "tokens_per_s",
    "mfu",
    "elapsed_s",
)


def read_metrics(path: Path, *, up_to_step: int) -> list[dict[str, Any]]:
    """Rows of an earlier run's CSV up to a checkpoint step (later rows are replayed on resume)."""
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        rows = [dict(r) for r in csv.DictReader(fh)]
    return [r for r in rows if int(r["step"]) <= up_to_step]


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in METRIC_FIELDS})
    tmp.replace(path)


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # a bare GPU host: metrics.csv holds the same numbers
        log.info("curves skipped: matplotlib is not installed")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(float(r["tokens"]), float(r[key])) for r in rows if r.get(key) not in ("", None)]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        xs, ys = series(key)
        if xs:
            ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_info(
    cfg: Any, *, preset: Any, model: Any, data: Any, result: Any, final: Any, **run: Any
) -> dict[str, Any]:
    """training.json: what was trained, on what, how far, how fast; `run` holds loop figures."""
    device = run["device"]
    return {
        "preset": preset.name,
        "architecture": model.config.model_type,
        "layers": preset.layers,
        "hidden": preset.hidden,
        "heads": preset.heads,
        # Trained windows are seq_len tokens and the model has exactly that many positions:
        # no consumer can use a position the run never trained.
        "context_length": model.config.max_position_embeddings,
        "seq_len": cfg.seq_len,
        "tokenizer_vocab_size": len(data.tokenizer),
        "tokenizer_vocab_requested": None if cfg.tokenizer else cfg.vocab_size,
        "vocab_note": data.vocab_note,
        "tokenizer_source": cfg.tokenizer or "byte-level BPE trained on the train split",
        "tokenizer_hash": data.tokenizer_hash,
        "params": result.params,
        "params_non_embedding": result.params_non_embedding,
        "preset_name_params": preset.name_params,
        "preset_name_vocab": preset.name_vocab,
        "steps": result.steps,
        "max_steps": run["max_steps"],
        "schedule_horizon": run["horizon"],
        "warmup_steps_used": run["warmup"],  # capped at 10% of max_steps, fixed at the start
        "final_lr": run["final_lr"],
        "tokens_seen": result.tokens_seen,
        "batch_size": cfg.batch_size,
        "grad_accum": cfg.grad_accum,
        "world_size": run["world"],
        "final_train_loss": result.train_loss,
        "final_val_loss": final.loss,
        "bits_per_byte": final.bits_per_byte,
        "validation_tokens_scored": final.tokens,
        "validation_windows": final.windows,
        "validation_sampled": final.sampled,
        "tokens_per_s": result.tokens_per_s,
        "mfu": result.mfu,
        "tokens_per_s_steady": result.steady_tokens_per_s,
        "mfu_steady": result.steady_mfu,
        "peak_flops": run["peak"],
        "peak_memory_bytes": result.peak_memory_bytes,
        "compile": run["compiled"],  # False after a failed compile or a failed check
        "attention": run["attention"],
        "bf16": run["bf16"],
        "residual_dtype": run["residual_dtype"],  # config's auto resolved
        "elapsed_s": result.elapsed_s,
        "stopped": result.stopped,
        "resumed_from": result.resumed_from,
        "device": str(device),
        "device_name": _device_name(device),
        "data": str(cfg.data),
        "format": cfg.format,
        "train_stories": data.train.n_docs,
        # Per split, stories of an --include-rejected export that failed the checks; they were
        # left out unless rejected_stories_included. None: the export has no `accepted` column.
        "rejected_stories": data.rejected,
        "rejected_stories_included": bool(data.rejected) and data.rejected_included,
        "validation_stories": data.validation.n_docs,
        "train_tokens": data.train.n_tokens,
        "validation_tokens": data.validation.n_tokens,
        "config": cfg.to_dict(),
    }


def _device_name(device: Any) -> str:
    if device.type != "cuda":
        return device.type
    import torch

    return torch.cuda.get_device_name(device)


def write_card(out: Path, info: dict[str, Any]) -> None:
    """training.json (machine-readable) and README.md (the model card)."""
    (out / "training.json").write_text(json.dumps(info, indent=2, default=str))
    i = info
    rows = [
        (
            "data",
            f"`{i['data']}` ({i['format']} format; {i['train_stories']:,} train / "
            f"{i['validation_stories']:,} validation stories)",
        ),
        (
            "preset",
            f"`{i['preset']}`: {i['layers']} layers x {i['hidden']}, {i['heads']} heads",
        ),
        (
            "context",
            f"{i['context_length']} tokens: the length of the training windows; the model has "
            "no other positions",
        ),
        ("parameters", f"{i['params']:,} ({i['params_non_embedding']:,} without embeddings)"),
        (
            "tokenizer",
            f"{i['tokenizer_vocab_size']:,} tokens ({i['tokenizer_source']}), "
            "`<|endoftext|>` ends a story"
            + (f"; {i['vocab_note']}" if i.get("vocab_note") else ""),
        ),
        (
            "steps",
            f"{i['steps']:,} (batch {i['batch_size']} x {i['grad_accum']} accumulation "
            f"x {i['seq_len']} tokens)",
        ),
        ("tokens seen", f"{i['tokens_seen']:,}"),
        (
            "final validation loss",
            f"{i['final_val_loss']:.4f} nats/token over "
            + (
                f"a seeded sample of {i['validation_tokens_scored']:,} tokens"
                if i["validation_sampled"]
                else f"the whole validation split ({i['validation_tokens_scored']:,} tokens)"
            ),
        ),
        ("bits per byte", f"{i['bits_per_byte']:.4f} (`trainer.evaluate`: per UTF-8 byte of text)"),
        ("stopped by", str(i["stopped"])),
    ]
    if i.get("rejected_stories"):
        used = "included" if i["rejected_stories_included"] else "left out"
        rejected = ", ".join(f"{s} {n:,}" for s, n in i["rejected_stories"].items())
        rows.insert(1, ("rejected stories", f"{rejected} ({used})"))
    # A prompt of a few tokens plus this many new ones stays inside the trained positions.
    new_tokens = min(80, i["context_length"] // 2)
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    card = f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [tinystories, {i["architecture"]}]
---

# TinyStories {i["preset"]} ({i["architecture"]})

A small language model trained from scratch on a TinyStories-style dataset.

| | |
|---|---|
{table}

Load it with `transformers`:

```python
from transformers import pipeline
generate = pipeline("text-generation", model="PATH_TO_THIS_DIRECTORY")
print(generate("Once upon a time", max_new_tokens={new_tokens})[0]["generated_text"])
```

The model has {i["context_length"]} positions: keep the prompt and `max_new_tokens` together within
them (positions past the trained context do not exist).

Curves: `curves.png`, numbers: `metrics.csv`, run settings: `training.json`.
"""
    (out / "README.md").write_text(card)
