"""What a run leaves besides weights: metrics CSV, curves PNG, model card, training.json."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

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
    import matplotlib

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


def bits_per_byte(loss: float, *, n_tokens: int, n_bytes: int) -> float:
    """Nats per token -> bits per UTF-8 byte of the same text: tokenizer-independent."""
    return loss / math.log(2) * n_tokens / max(n_bytes, 1)


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
            f"`{i['preset']}`: {i['layers']} layers x {i['hidden']}, {i['heads']} heads, "
            f"context {i['context_length']}",
        ),
        ("parameters", f"{i['params']:,} ({i['params_non_embedding']:,} without embeddings)"),
        (
            "tokenizer",
            f"{i['tokenizer_vocab_size']:,} tokens ({i['tokenizer_source']}), "
            "`<|endoftext|>` ends a story",
        ),
        (
            "steps",
            f"{i['steps']:,} (batch {i['batch_size']} x {i['grad_accum']} accumulation "
            f"x {i['seq_len']} tokens)",
        ),
        ("tokens seen", f"{i['tokens_seen']:,}"),
        ("final validation loss", f"{i['final_val_loss']:.4f} nats/token"),
        ("bits per byte", f"{i['bits_per_byte']:.4f}"),
        ("stopped by", str(i["stopped"])),
    ]
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
print(generate("Once upon a time", max_new_tokens=80)[0]["generated_text"])
```

Curves: `curves.png`, numbers: `metrics.csv`, run settings: `training.json`.
"""
    (out / "README.md").write_text(card)
