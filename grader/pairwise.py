"""Pairwise comparison (FastChat `pairwise`, alpaca_eval): two completions of the same
beginning, judged in both orders; consistent verdicts count, inconsistent ones are ties.

Sources: two models on the evaluation prompts, or one model against the reference (the true
ending of a held-out story). Win rate of A = (wins + ties / 2) / readable pairs, with a
bootstrap 95% CI over pairs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from grader.answers import AnswerLog
from grader.cache import CompletionCache, JudgmentCache
from grader.config import JudgeSettings
from grader.exportdata import column, load_export
from grader.generation import GenerationSettings
from grader.gpteval import completions_for_prompts
from grader.judge import Judge, Judgment
from grader.judge_client import JudgeCost, transport_for
from grader.memorization import split_story
from grader.models import load_model, unique_names
from grader.parsing import parse_verdict
from grader.resources import load_evaluation_prompts, load_rubric
from grader.stats import bootstrap_ci

log = logging.getLogger(__name__)

# Joins the two completions into the cache key; order matters, so A|B and B|A differ.
_KEY_SEP = "\n<<< completion B >>>\n"
REFERENCE = "reference"
# Every raw verdict of a run (grade's own answers are judge_answers.jsonl).
PAIRWISE_ANSWERS_FILE = "pairwise_judge_answers.jsonl"


@dataclass(frozen=True)
class Pair:
    beginning: str
    a: str
    b: str


@dataclass
class PairwiseConfig:
    model_a: Path
    out: Path
    model_b: Path | None = None  # None: compare against the reference endings in `data`
    data: Path | None = None
    judge: JudgeSettings | None = None
    n: int = 20  # pairs: evaluation prompts (two models) or held-out stories (reference)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    seed: int = 0


def _fields(beginning: str, a: str, b: str) -> dict[str, str]:
    return {"beginning": beginning, "completion_a": a, "completion_b": b}


def outcome(first: Judgment, swapped: Judgment) -> str:
    """`a`, `b` or `tie` when both orders agree; `inconsistent` when they do not (FastChat
    counts these as ties); `unreadable` when either verdict could not be read."""
    if not (first.ok and swapped.ok):
        return "unreadable"
    x = first.scores["preference"]  # 1.0: the completion shown first (a) is better
    y = 1.0 - swapped.scores["preference"]  # a was shown second there
    if x != y:
        return "inconsistent"
    return {1.0: "a", 0.0: "b", 0.5: "tie"}[x]


async def judge_pairs(
    judge: Judge, pairs: list[Pair], *, on_done: Callable[[], None] | None = None
) -> list[dict]:
    """Both orders of every pair; one row per pair with both raw verdicts."""
    items = []
    for p in pairs:
        items.append((p.beginning, p.a + _KEY_SEP + p.b, _fields(p.beginning, p.a, p.b)))
        items.append((p.beginning, p.b + _KEY_SEP + p.a, _fields(p.beginning, p.b, p.a)))
    js = await judge.grade_many(items, on_done=on_done)
    rows = []
    for k, p in enumerate(pairs):
        first, swapped = js[2 * k], js[2 * k + 1]
        rows.append(
            {
                "beginning": p.beginning,
                "a": p.a,
                "b": p.b,
                "outcome": outcome(first, swapped),
                "verdict_a_first": first.scores.get("preference") if first.ok else None,
                "verdict_b_first": swapped.scores.get("preference") if swapped.ok else None,
            }
        )
    return rows


def summarize_pairs(rows: list[dict], *, seed: int = 0) -> dict:
    """Counts, win rate of A with a bootstrap CI, and how often the first position won."""
    counts = Counter(r["outcome"] for r in rows)
    value = {"a": 1.0, "b": 0.0, "tie": 0.5, "inconsistent": 0.5}
    scored = [value[r["outcome"]] for r in rows if r["outcome"] in value]
    ci = bootstrap_ci(scored, seed=seed)
    verdicts = [
        v for r in rows for v in (r["verdict_a_first"], r["verdict_b_first"]) if v is not None
    ]
    return {
        "pairs": len(rows),
        "a_wins": counts["a"],
        "b_wins": counts["b"],
        "ties": counts["tie"],
        "inconsistent": counts["inconsistent"],
        "unreadable": counts["unreadable"],
        "win_rate_a": sum(scored) / len(scored) if scored else None,
        "ci95": list(ci) if ci else None,
        # 0.5 for a judge without position bias; FastChat reports the same check.
        "first_position_preferred": (
            sum(1.0 if v == 1.0 else 0.5 if v == 0.5 else 0.0 for v in verdicts) / len(verdicts)
            if verdicts
            else None
        ),
    }


def _build_pairs(config: PairwiseConfig) -> tuple[list[Pair], str, str]:
    ccache = CompletionCache(config.out / "completion_cache.jsonl")
    # d1/model vs d2/model would otherwise read "model vs model".
    names = unique_names([m for m in (config.model_a, config.model_b) if m is not None])
    lm_a = load_model(config.model_a, name=names[0])
    if config.model_b is None:
        if config.data is None:
            raise ValueError("pairwise against the reference needs --data (held-out stories)")
        stories = [s for s in column(load_export(config.data), "validation", "text", config.n)]
        cuts = [split_story(s) for s in stories if s.strip()]
        beginnings = [b for b, _ in cuts]
        outs = completions_for_prompts(
            lm_a, beginnings, k=1, settings=config.generation, cache=ccache
        )
        pairs = [Pair(b, o.completion.text, t) for (b, t), o in zip(cuts, outs, strict=True)]
        return pairs, lm_a.name, REFERENCE
    lm_b = load_model(config.model_b, name=names[1])
    prompts = load_evaluation_prompts()[: config.n]
    outs_a = completions_for_prompts(lm_a, prompts, k=1, settings=config.generation, cache=ccache)
    outs_b = completions_for_prompts(lm_b, prompts, k=1, settings=config.generation, cache=ccache)
    pairs = [
        Pair(p, a.completion.text, b.completion.text)
        for p, a, b in zip(prompts, outs_a, outs_b, strict=True)
    ]
    return pairs, lm_a.name, lm_b.name


async def _judge_all(config: PairwiseConfig, pairs: list[Pair], cost: JudgeCost) -> tuple:
    js = config.judge
    assert js is not None
    rubric = load_rubric("pairwise_rubric.yaml")
    cache = JudgmentCache(config.out / "judge_cache.jsonl")
    async with transport_for(js, cost) as transport:
        judge = Judge(
            transport,
            rubric,
            cache,
            concurrency=js.concurrency,
            parser=parse_verdict,
            answers=AnswerLog(config.out / PAIRWISE_ANSWERS_FILE),
        )
        rows = await judge_pairs(judge, pairs)
    return rows, rubric.version, judge.stats.to_dict()


def run_pairwise(config: PairwiseConfig) -> dict:
    """Build the pairs, judge both orders, write pairwise.json and pairwise.md into config.out."""
    config.out.mkdir(parents=True, exist_ok=True)
    pairs, name_a, name_b = _build_pairs(config)
    cost = JudgeCost()
    rows, version, stats = asyncio.run(_judge_all(config, pairs, cost))
    assert config.judge is not None
    if config.judge.simulator:
        rows = [r | {"judge": "SIMULATOR"} for r in rows]
    result = {
        "a": name_a,
        "b": name_b,
        "judge": config.judge.public() | {"rubric_version": version},
        "summary": summarize_pairs(rows, seed=config.seed),
        "judge_stats": stats,
        "cost": cost.to_dict(),
        "rows": rows,
    }
    (config.out / "pairwise.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (config.out / "pairwise.md").write_text(render_pairwise(result), encoding="utf-8")
    log.info("pairwise_done a=%s b=%s pairs=%d", name_a, name_b, len(rows))
    return result


def summary_line(result: dict) -> str:
    s = result["summary"]
    sim = " (sim)" if result["judge"].get("simulator") else ""
    rate = "-" if s["win_rate_a"] is None else f"{s['win_rate_a']:.2f}{sim}"
    ci = f" [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]" if s["ci95"] else ""
    first = s["first_position_preferred"]
    return (
        f"{result['a']} vs {result['b']}: win rate {rate}{ci} over {s['pairs']} pairs "
        f"({s['a_wins']} wins, {s['b_wins']} losses, {s['ties']} ties, {s['inconsistent']} "
        f"inconsistent, {s['unreadable']} unreadable); first position preferred "
        + ("-" if first is None else f"{first:.2f}")
    )


def render_pairwise(result: dict) -> str:
    j = result["judge"]
    lines = [f"# Pairwise: {result['a']} vs {result['b']}", ""]
    if j.get("simulator"):
        lines += ["> **JUDGE IS THE BUILT-IN SIMULATOR**: verdicts come from text heuristics.", ""]
    lines += [
        f"Judge `{j['model']}`, rubric `{j['rubric_version']}`, temperature {j['temperature']}; "
        "every pair judged in both orders, verdicts that change with the order count as ties.",
        "",
        summary_line(result),
        "",
    ]
    return "\n".join(lines) + "\n"
