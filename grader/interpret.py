"""Interpretability views: attention maps of every head, top-activating tokens of MLP neurons."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grader.models import LoadedModel


def _token_labels(lm: LoadedModel, ids: list[int]) -> list[str]:
    return [lm.tokenizer.decode([i]).replace("\n", "\\n") or "∅" for i in ids]


def attention_maps(lm: LoadedModel, prompt: str, path: str | Path, *, max_tokens: int = 48) -> dict:
    """PNG grid (layers x heads) of attention weights for the prompt; needs eager attention."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    # Never past the trained context: positions beyond it have no embedding (or an untrained one).
    ids = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"][
        : min(max_tokens, lm.context_length)
    ]
    if not ids:
        raise ValueError("attention prompt is empty after tokenization")
    with torch.inference_mode():
        out = lm.model(
            input_ids=torch.tensor([ids], device=lm.model.device), output_attentions=True
        )
    atts = [a[0].float().cpu().numpy() for a in out.attentions]  # per layer: heads x q x k
    if not atts or atts[0] is None:
        raise RuntimeError("model returned no attention weights (load with eager attention)")
    layers, heads = len(atts), atts[0].shape[0]
    labels = _token_labels(lm, ids)
    # Every token keeps its label: the cells grow with the prompt (about 0.1 inch per token,
    # so a 5-point label fits at 90 dpi) instead of the labels being dropped.
    cell = max(2.0, 0.1 * len(ids) + 0.8)
    font = 5 if len(ids) <= 48 else 4
    fig, axes = plt.subplots(layers, heads, figsize=(cell * heads, cell * layers), squeeze=False)
    for li in range(layers):
        for hi in range(heads):
            ax = axes[li][hi]
            ax.imshow(atts[li][hi], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {li} head {hi}", fontsize=8)
            ax.set_xticks(range(len(ids)), labels, rotation=90, fontsize=font)
            ax.set_yticks(range(len(ids)), labels, fontsize=font)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    # Attention sums to one over keys for every query: a cheap sanity value for the report.
    return {
        "layers": layers,
        "heads": heads,
        "tokens": len(ids),
        "labelled_tokens": len(axes[0][0].get_xticklabels()),
        "png": str(path),
        "row_sum_max_error": float(max(abs(a.sum(-1) - 1).max() for a in atts)),
    }


def top_activating_tokens(
    lm: LoadedModel,
    texts: list[str],
    *,
    neurons_per_layer: int = 4,
    top_k: int = 5,
    max_tokens_per_text: int = 128,
) -> list[dict]:
    """For each layer, the neurons with the largest peak activation and the tokens that drive them.

    A forward hook on each block's MLP activation records post-nonlinearity values per token.
    """
    import torch

    blocks = _blocks(lm.model)
    store: dict[int, list[np.ndarray]] = {i: [] for i in range(len(blocks))}
    handles = []
    for li, block in enumerate(blocks):
        handles.append(
            block.mlp.act.register_forward_hook(
                lambda _m, _inp, out, li=li: store[li].append(out[0].float().cpu().numpy())
            )
        )
    window = min(max_tokens_per_text, lm.context_length)  # positions the model was trained on
    tokens: list[tuple[int, int]] = []  # (text index, position)
    all_ids: list[list[int]] = []
    try:
        with torch.inference_mode():
            for text in texts:
                ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"][:window]
                if not ids:
                    continue
                all_ids.append(ids)
                tokens.extend((len(all_ids) - 1, p) for p in range(len(ids)))
                lm.model(input_ids=torch.tensor([ids], device=lm.model.device))
    finally:
        for h in handles:
            h.remove()
    rows = []
    for li, chunks in store.items():
        if not chunks:
            continue
        acts = np.concatenate(chunks, axis=0)  # tokens x neurons
        peak = acts.max(axis=0)
        for neuron in np.argsort(-peak)[:neurons_per_layer]:
            order = np.argsort(-acts[:, neuron])[:top_k]
            examples = []
            for t in order:
                doc, pos = tokens[int(t)]
                ids = all_ids[doc]
                left = lm.tokenizer.decode(ids[max(0, pos - 4) : pos])
                tok = lm.tokenizer.decode([ids[pos]])
                examples.append(
                    {
                        "token": tok,
                        "context": f"{left}[{tok}]",
                        "activation": float(acts[int(t), neuron]),
                    }
                )
            rows.append(
                {
                    "layer": li,
                    "neuron": int(neuron),
                    "peak": float(peak[neuron]),
                    "examples": examples,
                }
            )
    return rows


def _blocks(model):
    base = getattr(model, "transformer", None) or getattr(model, "model", None)
    blocks = getattr(base, "h", None) or getattr(base, "layers", None)
    if blocks is None:
        raise RuntimeError("unsupported model layout: no transformer blocks found")
    return list(blocks)


def neurons_markdown(rows: list[dict]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", "\\n").replace("`", "'")

    lines = ["| layer | neuron | peak | top tokens (in context) |", "|---|---|---|---|"]
    for r in rows:
        ex = "; ".join(f"`{esc(e['context'])}` {e['activation']:.2f}" for e in r["examples"])
        lines.append(f"| {r['layer']} | {r['neuron']} | {r['peak']:.2f} | {ex} |")
    return "\n".join(lines)
