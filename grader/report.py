"""report.md, report.json and PNG plots from a grading result."""

from __future__ import annotations

import json
from pathlib import Path

from grader.parsing import CATEGORIES

SIM_WARNING = (
    "**JUDGE IS THE BUILT-IN SIMULATOR**: scores come from text heuristics, not from an LLM. "
    "Set OPENAI_API_KEY (or --judge-base-url/--judge-api-key) for real GPT-Eval numbers."
)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ci(summary: dict | None) -> str:
    if not summary or summary.get("mean") is None:
        return "-"
    ci = summary.get("ci95")
    return f"{summary['mean']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{summary['mean']:.2f}"


def eval_loss(entry: dict) -> tuple[float | None, str]:
    if entry.get("loss"):
        return entry["loss"]["loss"], "measured"
    for key in ("final_val_loss", "val_loss", "eval_loss"):
        v = entry.get("training", {}).get(key)
        if isinstance(v, int | float):
            return float(v), "training.json"
    return None, ""


def paper_table(models: list[dict]) -> list[dict]:
    rows = []
    for m in models:
        o = m["gpt_eval"]["overall"]
        loss, src = eval_loss(m)
        rows.append(
            {
                "model": m["model"]["name"],
                "params": m["model"]["params"],
                "eval_loss": loss,
                "eval_loss_source": src,
                **{c: o[c]["mean"] for c in CATEGORIES},
                "age_group": o["age_group"].get("mean_letter"),
            }
        )
    return rows


def summary_line(result: dict) -> str:
    parts = []
    for r in paper_table(result["models"]):
        parts.append(
            f"{r['model']}: grammar {_fmt(r['grammar'])} creativity {_fmt(r['creativity'])} "
            f"consistency {_fmt(r['consistency'])} plot {_fmt(r['plot'])} "
            f"age {r['age_group'] or '-'}"
        )
    sim = " (SIMULATOR judge)" if result["judge"].get("simulator") else ""
    return (
        f"graded {len(result['models'])} model(s){sim}: "
        + "; ".join(parts)
        + f"; judge cost ${result['cost']['usd']:.4f}"
    )


def _plots(result: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    models = result["models"]
    rows = sorted(paper_table(models), key=lambda r: r["params"])
    if rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in CATEGORIES:
            pts = [(r["params"], r[c]) for r in rows if r[c] is not None]
            if pts:
                ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o", label=c)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("GPT-Eval score (/10)")
        ax.set_ylim(0, 10)
        ax.set_title("Scores by model size")
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
                    (ck["step"], ck["gpt_eval"]["overall"][c]["mean"])
                    for ck in cks
                    if ck["gpt_eval"]["overall"][c]["mean"] is not None
                ]
                if pts:
                    ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", label=c)
            ax.set_xlabel("training step")
            ax.set_ylabel("GPT-Eval score (/10)")
            ax.set_ylim(0, 10)
            ax.set_title(f"{m['model']['name']}: scores by checkpoint")
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / "scores_by_checkpoint.png", dpi=100)
        plt.close(fig)
        written.append("scores_by_checkpoint.png")
    return written


def render_markdown(result: dict, plots: list[str]) -> str:
    j = result["judge"]
    lines = ["# TinyStories grading report", ""]
    if j.get("simulator"):
        lines += [f"> {SIM_WARNING} (requested judge: `{j.get('requested_model')}`)", ""]
    s = result["settings"]
    g = s["generation"]
    lines += [
        f"Judge: `{j['model']}` at `{j['base_url']}`, rubric `{j['rubric_version']}`. "
        f"Prompts: {s['prompts']}, completions per prompt: {s['k']} "
        f"({g['mode']}, temperature {g['temperature']}, beams {g['num_beams']}, "
        f"max {g['max_new_tokens']} new tokens).",
        f"Judge cost: ${result['cost']['usd']:.4f} over {result['cost']['requests']} requests "
        f"({result['cost']['prompt_tokens']} prompt + {result['cost']['completion_tokens']} "
        f"completion tokens)"
        + (
            f"; no price known for {', '.join(result['cost']['unpriced_models'])}"
            if result["cost"]["unpriced_models"]
            else ""
        )
        + ".",
        "",
        "## Comparison (paper style)",
        "",
        "| model | params | eval loss | grammar | creativity | consistency | plot | age group |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in paper_table(result["models"]):
        loss = _fmt(r["eval_loss"], 3) + (" *" if r["eval_loss_source"] == "training.json" else "")
        lines.append(
            f"| {r['model']} | {r['params']:,} | {loss} | {_fmt(r['grammar'])} | "
            f"{_fmt(r['creativity'])} | {_fmt(r['consistency'])} | {_fmt(r['plot'])} | "
            f"{r['age_group'] or '-'} |"
        )
    lines += ["", "Eval loss marked * is the trainer's own figure (no --data given).", ""]
    lines += [f"![{p}]({p})" for p in plots] + [""]
    for m in result["models"]:
        lines += _model_section(m)
    return "\n".join(lines) + "\n"


def _model_section(m: dict) -> list[str]:
    d = m["model"]
    ge = m["gpt_eval"]
    o = ge["overall"]
    lines = [
        f"## {d['name']}",
        "",
        f"{d['params']:,} parameters, {d['layers']} layers, hidden {d['hidden_size']}, "
        f"context {d['context_length']}, tokenizer {d['tokenizer']}.",
        "",
        "### GPT-Eval (mean over prompts, bootstrap 95% CI over prompts)",
        "",
        "| category | mean [95% CI] |",
        "|---|---|",
    ]
    lines += [f"| {c} | {_ci(o[c])} |" for c in CATEGORIES]
    age = o["age_group"]
    lines += [
        f"| age group | {age.get('mean_letter') or '-'} (mode {age.get('mode') or '-'}, "
        f"distribution {age.get('distribution')}) |",
        "",
        f"Judged {ge['judged']} completions; parse failures {ge['parse_failures']}, "
        f"judge errors {ge['errors']}; parse methods {ge['methods']}.",
    ]
    noise = ge.get("judge_noise")
    if noise:
        diffs = ", ".join(f"{c} {_fmt(v)}" for c, v in noise["mean_abs_diff"].items())
        lines.append(
            f"Judge noise ({noise['n']} completions graded twice, mean |difference|): "
            f"{diffs}; overall {_fmt(noise['overall_mean_abs_diff'])}."
        )
    lines += [
        "",
        "<details><summary>Per-prompt means</summary>",
        "",
        "| # | prompt | " + " | ".join(CATEGORIES) + " | failed |",
        "|---|---|" + "---|" * len(CATEGORIES) + "---|",
    ]
    for r in ge["per_prompt"]:
        p = r["prompt"].replace("\n", " ").replace("|", "\\|")
        p = p[:60] + ("..." if len(p) > 60 else "")
        lines.append(
            f"| {r['prompt_index']} | {p} | "
            + " | ".join(_fmt(r["scores"][c]) for c in CATEGORIES)
            + f" | {r['n_failed']} |"
        )
    lines += ["", "</details>", ""]
    if m.get("capability"):
        lines += [
            "### Capability suites (greedy, expected-answer rules)",
            "",
            "| suite | scored | passed | accuracy | judge consistency |",
            "|---|---|---|---|---|",
        ]
        for name, t in m["capability"]["table"].items():
            lines.append(
                f"| {name} | {t['n']} | {t['passed']} | {_fmt(t['accuracy'])} | "
                f"{_fmt(t['judge_consistency'])} |"
            )
        lines.append("")
    if m.get("loss"):
        L = m["loss"]
        lines += [
            "### Loss",
            "",
            f"On {L['split']}: loss {L['loss']:.4f} nats/token, perplexity "
            f"{L['perplexity']:.2f}, {L['bits_per_byte']:.4f} bits per UTF-8 byte "
            f"({L['tokens']} tokens, {L['bytes']} bytes, context length "
            f"{L['context_length']}, tokenizer {L['tokenizer']}).",
            "",
        ]
    if m.get("memorization"):
        mm = m["memorization"]
        dist = ", ".join(f"{k} {_fmt(v, 3)}" for k, v in mm["distinct"].items())
        lines += [
            "### Memorization and diversity",
            "",
            f"{mm['n']} held-out beginnings; mean Rouge-2 precision vs true continuation "
            f"{_fmt(mm['rouge2_vs_continuation_mean'], 3)}, vs closest of "
            f"{mm['train_stories_indexed']} training stories "
            f"{_fmt(mm['rouge2_vs_closest_train_mean'], 3)} (max "
            f"{_fmt(mm['rouge2_vs_closest_train_max'], 3)}); {dist}.",
            "",
            f"![memorization]({mm['histogram_png']})",
            "",
        ]
    if m.get("instruct"):
        ins = m["instruct"]
        if "skipped" in ins:
            lines += ["### Instruction following", "", f"Skipped: {ins['skipped']}.", ""]
        else:
            lines += [
                "### Instruction following",
                "",
                f"{ins['n']} held-out instructions: judge score {_ci(ins['judge_score'])}, "
                f"share of required words present {_ci(ins['required_word_share'])}.",
                "",
            ]
    if m.get("interpret"):
        it = m["interpret"]
        lines += [
            "### Interpretability",
            "",
            f"Attention of every head ({it['attention']['layers']} layers x "
            f"{it['attention']['heads']} heads, {it['attention']['tokens']} tokens): "
            f"![attention]({it['attention']['png']}). "
            f"Top-activating tokens of MLP neurons: [{it['neurons_md']}]({it['neurons_md']}).",
            "",
        ]
    if m.get("checkpoints"):
        lines += [
            "### Checkpoints",
            "",
            "| step | eval loss | " + " | ".join(CATEGORIES) + " |",
            "|---|---|" + "---|" * len(CATEGORIES),
        ]
        for ck in m["checkpoints"]:
            o2 = ck["gpt_eval"]["overall"]
            lines.append(
                f"| {ck['step']} | {_fmt(ck.get('loss', {}).get('loss'), 3)} | "
                + " | ".join(_fmt(o2[c]["mean"]) for c in CATEGORIES)
                + " |"
            )
        lines.append("")
    return lines


def write_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(result, out)
    result["plots"] = plots
    result["table"] = paper_table(result["models"])
    result["summary"] = summary_line(result)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(result, plots), encoding="utf-8")
