"""GPT-Eval: complete the evaluation prompts, have the judge grade them, aggregate per prompt."""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from grader.cache import JsonlCache, completion_key
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
    cache: JsonlCache | None = None,
) -> list[Sample]:
    """k samples per prompt; greedy and beam search give one, since k copies would be equal.

    With a cache, samples already made by these weights with these settings are reused and only
    the missing ones are generated.
    """
    per = 1 if settings.deterministic else k
    flat = [(i, p, j) for i, p in enumerate(prompts) for j in range(per)]
    if cache is None:
        outs = generate(lm, [p for _, p, _ in flat], settings, on_batch=on_batch)
        return [Sample(i, p, c) for (i, p, _), c in zip(flat, outs, strict=True)]
    keys = [
        completion_key(lm.weights_sha, p, settings.to_dict(), settings.seed, j) for _, p, j in flat
    ]
    missing = [n for n, key in enumerate(keys) if cache.get(key) is None]
    if on_batch and len(flat) > len(missing):
        on_batch(len(flat) - len(missing))
    if missing:
        # A seed drawn from the missing keys: reusing settings.seed would make sample j=2 of a
        # larger run repeat sample j=0 of the smaller one whenever the batches line up.
        digest = hashlib.sha256("".join(keys[n] for n in missing).encode()).hexdigest()
        derived = int(digest[:8], 16)
        fresh = generate(
            lm, [flat[n][1] for n in missing], replace(settings, seed=derived), on_batch=on_batch
        )
        cache.put_many(
            [
                {"key": keys[n], "model": lm.name, "prompt": flat[n][1], "sample": flat[n][2]}
                | {"text": c.text, "n_tokens": c.n_tokens, "finished": c.finished}
                for n, c in zip(missing, fresh, strict=True)
            ]
        )
    samples = []
    for (i, p, _), key in zip(flat, keys, strict=True):
        e = cache.get(key)
        assert e is not None
        samples.append(Sample(i, p, Completion(p, e["text"], e["n_tokens"], e["finished"])))
    return samples


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
    overall: dict = {}
    for c in CATEGORIES:
        overall[c] = summarize(
            [r["scores"][c] for r in per_prompt if r["scores"][c] is not None], seed=seed
        )
        # Every mean is stated with how many completions it covers and how many it could not.
        scored = sum(1 for j in judgments if j.ok and j.scores.get(c) is not None)
        overall[c] |= {"n_completions": scored, "n_unscored": len(judgments) - scored}
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
        "n_completions": len(judgments),
        # The raw answers behind each failure, so a reader can see what the judge said.
        "failures": [
            {"prompt_index": s.prompt_index, "method": j.method, "raw": j.raw or j.error or ""}
            | ({"first_raw": j.first_raw} if j.first_raw else {})
            for s, j in zip(samples, judgments, strict=True)
            if not j.ok
        ][:20],
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
    """Grade a random sample a second time, independently; mean |difference| per category."""
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
    # A second, independent judgment (its own cache key): a rerun does not pay for it again.
    again = await judge.grade_many(items, repeat=1, on_done=on_done)
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
