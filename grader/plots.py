"""Plots of a grading result: scores by model size and by checkpoint, with their CIs; the
simulator judge's plots say so in the title and across the figure."""

from __future__ import annotations

from pathlib import Path

from grader.parsing import CATEGORIES


def write_plots(result: dict, table: list[dict], out: Path) -> list[str]:
    """scores_by_size.png and scores_by_checkpoint.png, bootstrap CIs as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    models = result["models"]
    sim = bool(result["judge"].get("simulator"))
    rows = sorted(table, key=lambda r: r["params"])
    if rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in CATEGORIES:
            pts = [(r["params"], r[c], r[f"{c}_ci95"]) for r in rows if r[c] is not None]
            if pts:
                _errorbar(ax, pts, c)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("GPT-Eval score (/10), bootstrap 95% CI")
        ax.set_ylim(0, 10)
        ax.set_title("Scores by model size" + (" [SIMULATOR JUDGE]" if sim else ""))
        _sim_watermark(fig, sim)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "scores_by_size.png", dpi=100)
        plt.close(fig)
        written.append("scores_by_size.png")
    with_ck = [m for m in models if m.get("checkpoints")]
    if with_ck:
        fig, axes = plt.subplots(1, len(with_ck), figsize=(6 * len(with_ck), 4), squeeze=False)
        for ax, m in zip(axes[0], with_ck, strict=True):
            cks = m["checkpoints"]
            for c in CATEGORIES:
                pts = [
                    (ck["step"], o[c]["mean"], o[c].get("ci95"))
                    for ck in cks
                    if (o := ck["gpt_eval"]["overall"])[c]["mean"] is not None
                ]
                if pts:
                    _errorbar(ax, pts, c)
            ax.set_xlabel("training step")
            ax.set_ylabel("GPT-Eval score (/10), bootstrap 95% CI")
            ax.set_ylim(0, 10)
            title = f"{m['model']['name']}: scores by checkpoint"
            ax.set_title(title + (" [SIMULATOR JUDGE]" if sim else ""))
            ax.legend()
        _sim_watermark(fig, sim)
        fig.tight_layout()
        fig.savefig(out / "scores_by_checkpoint.png", dpi=100)
        plt.close(fig)
        written.append("scores_by_checkpoint.png")
    return written


def _errorbar(ax, pts: list[tuple[float, float, list | None]], label: str) -> None:
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    lo = [y - (ci[0] if ci else y) for _, y, ci in pts]
    hi = [(ci[1] if ci else y) - y for _, y, ci in pts]
    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)


def _sim_watermark(fig, sim: bool) -> None:
    if sim:
        fig.text(
            0.5,
            0.5,
            "SIMULATOR JUDGE",
            ha="center",
            va="center",
            fontsize=28,
            color="red",
            alpha=0.25,
            rotation=20,
        )
