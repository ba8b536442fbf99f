"""GPT-Eval: complete the evaluation prompts, have the judge grade them, aggregate per prompt."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from grader.generation import Completion, GenerationSettings, generate
from grader.judge import Judge, Judgment, gpt_eval_fields
from grader.models import LoadedModel
from grader.parsing import CATEGORIES
from grader.stats import mean_abs_difference, mean_or_none, summarize

log = logging.getLogger(__name__)

AGE_LETTERS = "ABCDEF"


@dataclass(frozen=True)
class Sample:
    prompt_index: int
    prompt: str
    completion: Completion


def completions_for_prompts(
    lm: LoadedModel,
    prompts: list[str],
    *,
    k: int,
    settings: GenerationSettings,
    on_batch: Callable[[int], None] | None = None,
) -> list[Sample]:
    """k samples per prompt; greedy and beam search give one, since k copies would be equal."""
    per = 1 if settings.deterministic else k
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(per)]
    outs = generate(lm, [p for _, p in flat], settings, on_batch=on_batch)
    return [Sample(i, p, c) for (i, p), c in zip(flat, outs, strict=True)]


def _age_summary(letters: list[str]) -> dict:
    if not letters:
        return {"mode": None, "mean": None, "distribution": {}}
    counts = Counter(letters)
    mean_idx = sum(AGE_LETTERS.index(a) for a in letters) / len(letters)
    return {
        "mode": counts.most_common(1)[0][0],
        "mean": round(mean_idx, 3),
        "mean_letter": AGE_LETTERS[round(mean_idx)],
        "distribution": dict(sorted(counts.items())),
    }


def aggregate(samples: list[Sample], judgments: list[Judgment], *, seed: int = 0) -> dict:
    """Per-prompt means, then overall means with bootstrap 95% CIs over prompts."""
    by_prompt: dict[int, list[Judgment]] = {}
    prompts: dict[int, str] = {}
    for s, j in zip(samples, judgments, strict=True):
        by_prompt.setdefault(s.prompt_index, []).append(j)
        prompts[s.prompt_index] = s.prompt
    per_prompt = []
    for idx in sorted(by_prompt):
        js = by_prompt[idx]
        good = [j for j in js if j.ok]
        row = {
            "prompt_index": idx,
            "prompt": prompts[idx],
            "n": len(js),
            "n_failed": len(js) - len(good),
            "scores": {c: mean_or_none([j.scores.get(c) for j in good]) for c in CATEGORIES},
        }
        ages = [j.age_group for j in good if j.age_group]
        row["age_mean"] = _age_summary(ages)["mean"]
        per_prompt.append(row)
    overall = {
        c: summarize([r["scores"][c] for r in per_prompt if r["scores"][c] is not None], seed=seed)
        for c in CATEGORIES
    }
    overall["age_group"] = _age_summary([j.age_group for j in judgments if j.ok and j.age_group])
    age_rows = [r["age_mean"] for r in per_prompt if r["age_mean"] is not None]
    overall["age_group"]["ci95"] = summarize(age_rows, seed=seed)["ci95"]
    return {
        "overall": overall,
        "per_prompt": per_prompt,
        "judged": sum(j.ok for j in judgments),
        "parse_failures": sum(j.method == "parse_failure" for j in judgments),
        "errors": sum(j.method == "error" for j in judgments),
        "methods": dict(Counter(j.method for j in judgments)),
    }


async def judge_noise(
    judge: Judge,
    samples: list[Sample],
    judgments: list[Judgment],
    *,
    n: int,
    seed: int = 0,
    on_done: Callable[[], None] | None = None,
) -> dict:
    """Grade a random sample a second time, bypassing the cache; mean |difference| per category."""
    ok = [i for i, j in enumerate(judgments) if j.ok]
    pick = random.Random(seed).sample(ok, min(n, len(ok)))
    items = [
        (
            samples[i].prompt,
            samples[i].completion.text,
            gpt_eval_fields(samples[i].prompt, samples[i].completion.text),
        )
        for i in pick
    ]
    again = await judge.grade_many(items, use_cache=False, on_done=on_done)
    out: dict = {"n": 0, "mean_abs_diff": {}}
    pairs_all: list[tuple[float, float]] = []
    for c in CATEGORIES:
        pairs = []
        for i, j2 in zip(pick, again, strict=True):
            a, b = judgments[i].scores.get(c), j2.scores.get(c) if j2.ok else None
            if a is not None and b is not None:
                pairs.append((a, b))
        out["mean_abs_diff"][c] = mean_abs_difference(pairs)
        pairs_all.extend(pairs)
    out["n"] = sum(1 for j in again if j.ok)
    out["overall_mean_abs_diff"] = mean_abs_difference(pairs_all)
    return out


async def judge_samples(
    judge: Judge, samples: list[Sample], *, on_done: Callable[[], None] | None = None
) -> list[Judgment]:
    items = [
        (s.prompt, s.completion.text, gpt_eval_fields(s.prompt, s.completion.text)) for s in samples
    ]
    return await judge.grade_many(items, on_done=on_done)
