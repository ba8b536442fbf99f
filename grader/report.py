"""report.md, report.json and PNG plots from a grading result."""

from __future__ import annotations

import json
from pathlib import Path

from grader.judge_client import unpriced_note
from grader.parsing import CATEGORIES
from grader.plots import write_plots

SIM_WARNING = (
    "**JUDGE IS THE BUILT-IN SIMULATOR**: scores come from text heuristics, not from an LLM. "
    "Set OPENAI_API_KEY (or --judge-base-url/--judge-api-key) for real GPT-Eval numbers."
)


# Appended to every number the simulator judge produced, wherever it is shown.
SIM_MARK = " (sim)"


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _counts(summary: dict) -> str:
    """`n=210, 10 unscored`: how many completions a mean covers and how many it leaves out."""
    if "n_completions" not in summary:
        return f"n={summary.get('n_prompts', 0)} prompts"
    extra = f", {summary['n_unscored']} unscored" if summary.get("n_unscored") else ""
    return f"n={summary['n_completions']}{extra}"


def _ci(summary: dict | None, sim: bool = False) -> str:
    if not summary:
        return "-"
    mark = SIM_MARK if sim else ""
    if summary.get("mean") is None:
        return f"- ({_counts(summary)})" if "n_completions" in summary else "-"
    ci = summary.get("ci95")
    body = f"{summary['mean']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{summary['mean']:.2f}"
    return f"{body}{mark} ({_counts(summary)})"


def _is_sim(result: dict) -> bool:
    return bool(result["judge"].get("simulator"))


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
                **{f"{c}_ci95": o[c].get("ci95") for c in CATEGORIES},
                **{f"{c}_n": o[c].get("n_completions") for c in CATEGORIES},
                "n_completions": m["gpt_eval"].get("n_completions"),
                "parse_failures": m["gpt_eval"].get("parse_failures"),
                "age_group": o["age_group"].get("mean_letter"),
                "judge": "SIMULATOR" if m["gpt_eval"].get("judge_simulator") else "llm",
            }
        )
    return rows


def summary_line(result: dict) -> str:
    parts = []
    mark = SIM_MARK if _is_sim(result) else ""
    for r in paper_table(result["models"]):
        scores = " ".join(f"{c} {_fmt(r[c])}{mark}" for c in CATEGORIES)
        parts.append(
            f"{r['model']}: {scores} age {r['age_group'] or '-'}{mark} "
            f"(n={r['n_completions']}, {r['parse_failures']} unreadable)"
        )
    sim = " (SIMULATOR judge)" if _is_sim(result) else ""
    return (
        f"graded {len(result['models'])} model(s){sim}: "
        + "; ".join(parts)
        + f"; judge cost ${result['cost']['usd']:.4f}"
    )


def render_markdown(result: dict, plots: list[str]) -> str:
    j = result["judge"]
    sim = _is_sim(result)
    mark = SIM_MARK if sim else ""
    lines = ["# TinyStories grading report", ""]
    if sim:
        lines += [
            f"> {SIM_WARNING} (requested judge: `{j.get('requested_model')}`). "
            f"Every score from it is marked `{SIM_MARK.strip()}`.",
            "",
        ]
    s = result["settings"]
    g = s["generation"]
    lines += [
        f"Judge: `{j['model']}` at `{j['base_url']}`, temperature {j.get('temperature')}, "
        f"max tokens {j.get('max_tokens')}, rubrics `{j['rubric_version']}` and "
        f"`{j.get('instruct_rubric_version')}`; an unreadable answer gets one correction turn, "
        "then counts as unscored (every raw answer is in `judge_answers.jsonl`). "
        f"Prompts: {s['prompts']}, completions per prompt: {s['k']} "
        f"({g['mode']}, temperature {g['temperature']}, beams {g['num_beams']}, "
        f"max {g['max_new_tokens']} new tokens).",
        f"Judge cost: ${result['cost']['usd']:.4f} over {result['cost']['requests']} requests "
        f"({result['cost']['prompt_tokens']} prompt + {result['cost']['completion_tokens']} "
        f"completion tokens)"
        + (
            f"; {unpriced_note(result['cost']['unpriced_models'])}"
            if result["cost"]["unpriced_models"]
            else ""
        )
        + ".",
        "",
        "## Comparison (paper style)",
        "",
        "| model | params | eval loss | grammar | creativity | consistency | plot | age group "
        "| judged (unreadable) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in paper_table(result["models"]):
        loss = _fmt(r["eval_loss"], 3) + (" *" if r["eval_loss_source"] == "training.json" else "")
        scores = " | ".join(
            f"{_fmt(r[c])}{mark if r[c] is not None else ''} (n={r[f'{c}_n']})" for c in CATEGORIES
        )
        lines.append(
            f"| {r['model']} | {r['params']:,} | {loss} | {scores} | "
            f"{r['age_group'] or '-'}{mark if r['age_group'] else ''} | "
            f"{r['n_completions']} ({r['parse_failures']}) |"
        )
    lines += [
        "",
        "Eval loss marked * is the trainer's own figure (no --data given). n: completions "
        "whose answer gave that score; unreadable answers are left out of every mean.",
        "",
    ]
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
        f"tokenizer {d['tokenizer']}. Loss and generation stay within the trained context of "
        f"{d['context_length']} tokens (from {d.get('context_source', 'config.json')})"
        + (
            f"; completions got {d['max_new_tokens_used']} new tokens to fit it."
            if d.get("max_new_tokens_used")
            else "."
        ),
        "",
        "### GPT-Eval (mean over prompts, bootstrap 95% CI over prompts)",
        "",
        "| category | mean [95% CI] (completions scored) |",
        "|---|---|",
    ]
    sim = bool(ge.get("judge_simulator"))
    lines += [f"| {c} | {_ci(o[c], sim)} |" for c in CATEGORIES]
    age = o["age_group"]
    lines += [
        f"| age group | {age.get('mean_letter') or '-'}{SIM_MARK if sim else ''} (mode "
        f"{age.get('mode') or '-'}, distribution {age.get('distribution')}) |",
        "",
        f"Judged {ge['judged']} of {ge.get('n_completions', ge['judged'])} completions; "
        f"unreadable answers {ge['parse_failures']} (after one correction turn each), judge "
        f"errors {ge['errors']}; parse methods {ge['methods']}.",
    ]
    lines += _failures(ge.get("failures") or [])
    mark = SIM_MARK if sim else ""
    cols = [f"{c}{mark}" for c in CATEGORIES]
    noise = ge.get("judge_noise")
    if noise:
        diffs = ", ".join(f"{c} {_fmt(v)}" for c, v in noise["mean_abs_diff"].items())
        lines.append(
            f"Judge noise{mark} ({noise['n']} completions graded twice, mean |difference|): "
            f"{diffs}; overall {_fmt(noise['overall_mean_abs_diff'])}."
        )
    lines += _agreement(m.get("agreement"), mark)
    lines += [
        "",
        "<details><summary>Per-prompt means</summary>",
        "",
        "| # | prompt | " + " | ".join(cols) + " | unreadable |",
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
            f"| suite | scored | passed | accuracy [Wilson 95% CI] | judge consistency{mark} |",
            "|---|---|---|---|---|",
        ]
        for name, t in m["capability"]["table"].items():
            ci = t.get("ci95")
            acc = _fmt(t["accuracy"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
            lines.append(
                f"| {name} | {t['n']} | {t['passed']} | {acc} | {_fmt(t['judge_consistency'])} |"
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
                f"{ins['n']} held-out instructions: judge score "
                f"{_ci(ins['judge_score'], bool(ins.get('judge_simulator')))} "
                f"({ins.get('parse_failures', 0)} unreadable), "
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
            "| step | eval loss | " + " | ".join(cols) + " |",
            "|---|---|" + "---|" * len(CATEGORIES),
        ]
        for ck in m["checkpoints"]:
            o2 = ck["gpt_eval"]["overall"]
            step = f"{ck['step']} (= final model)" if ck.get("same_as_final") else ck["step"]
            lines.append(
                f"| {step} | {_fmt(ck.get('loss', {}).get('loss'), 3)} | "
                + " | ".join(f"{_fmt(o2[c]['mean'])} ({_counts(o2[c])})" for c in CATEGORIES)
                + " |"
            )
        lines += ["", "A checkpoint with the final model's weights is graded once.", ""]
    return lines


def _agreement(agreement: dict | None, mark: str) -> list[str]:
    if not agreement:
        return []
    first, others = agreement["judges"][0], agreement["judges"][1:]
    lines = [
        "",
        f"Judge agreement{mark} on the same completions (Spearman against `{first}`, "
        "Krippendorff's alpha, interval, across all judges; means per judge):",
        "",
        "| category | alpha | " + " | ".join(f"rho vs {o} (n)" for o in others) + " | means |",
        "|---|---|" + "---|" * len(others) + "---|",
    ]
    for c, row in agreement["categories"].items():
        rhos = " | ".join(f"{_fmt(row['spearman_vs_first'][o])} ({row['n'][o]})" for o in others)
        means = ", ".join(f"{k} {_fmt(v)}" for k, v in row["means"].items())
        lines.append(f"| {c} | {_fmt(row['alpha'])} | {rhos} | {means} |")
    return lines


def _failures(failures: list[dict]) -> list[str]:
    if not failures:
        return []
    lines = ["", "<details><summary>Unreadable or failed judge answers (raw)</summary>", ""]
    for f in failures:
        raw = (f.get("raw") or "").replace("\n", " ")[:300]
        where = f"prompt {f['prompt_index']}, " if "prompt_index" in f else ""
        lines.append(f"- {where}{f['method']}: `{raw}`")
    return [*lines, "", "</details>"]


def write_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(result, paper_table(result["models"]), out)
    result["plots"] = plots
    result["table"] = paper_table(result["models"])
    result["summary"] = summary_line(result)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(result, plots), encoding="utf-8")
