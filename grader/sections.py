"""The evaluation sections of a grading run, one function each, for one model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from grader import gpteval, instruct, interpret, memorization
from grader.agreement import judge_agreement
from grader.cache import JsonlCache
from grader.config import GradeConfig, Progress
from grader.exportdata import column
from grader.generation import GenerationSettings, generate
from grader.judge import Judge, gpt_eval_fields
from grader.models import LoadedModel, load_model
from grader.parsing import CATEGORIES
from grader.stats import distinct_n, mean_or_none, summarize


async def agreement_section(
    judges: list[Judge], prompts: list[str], rows: list[dict], progress: Progress, label: str
) -> dict:
    """Extra judges grade the same completions; agreement with the first judge and overall."""
    items = [(prompts[r["prompt_index"]], r["completion"]) for r in rows]
    fields = [gpt_eval_fields(p, c) for p, c in items]
    scores = [[r["scores"] if r["method"] in ("strict", "lenient") else None for r in rows]]
    for judge in judges[1:]:
        adv = progress.task(f"{label}: judge {judge.model}", len(items))
        js = await judge.grade_many(
            [(p, c, f) for (p, c), f in zip(items, fields, strict=True)],
            on_done=lambda adv=adv: adv(1),
        )
        scores.append([j.scores if j.ok else None for j in js])
    return judge_agreement([j.model for j in judges], scores, CATEGORIES)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


async def gpt_eval_section(
    lm: LoadedModel,
    judge: Judge,
    prompts: list[str],
    k: int,
    settings: GenerationSettings,
    progress: Progress,
    label: str,
    noise_n: int,
    seed: int,
    *,
    cache: JsonlCache | None = None,
) -> tuple[dict, list[dict]]:
    per = 1 if settings.deterministic else k
    adv = progress.task(f"{label}: generating", len(prompts) * per)
    samples = await asyncio.to_thread(
        gpteval.completions_for_prompts,
        lm,
        prompts,
        k=k,
        settings=settings,
        on_batch=adv,
        cache=cache,
    )
    adv = progress.task(f"{label}: judging", len(samples))
    judgments = await gpteval.judge_samples(judge, samples, on_done=lambda: adv(1))
    result = gpteval.aggregate(samples, judgments, seed=seed)
    result["k"] = per
    result["generation"] = settings.to_dict()
    result["judge_simulator"] = judge.simulator
    if judge.simulator:
        for row in result["per_prompt"]:
            row["judge"] = "SIMULATOR"
    if noise_n:
        adv = progress.task(f"{label}: judge noise", min(noise_n, result["judged"]))
        result["judge_noise"] = await gpteval.judge_noise(
            judge, samples, judgments, n=noise_n, seed=seed, on_done=lambda: adv(1)
        )
    rows = [
        {
            "prompt_index": s.prompt_index,
            "completion": s.completion.text,
            "tokens": s.completion.n_tokens,
            "finished": s.completion.finished,
            "scores": j.scores,
            "age_group": j.age_group,
            "method": j.method,
            "cached": j.cached,
        }
        | ({"judge": "SIMULATOR"} if judge.simulator else {})
        for s, j in zip(samples, judgments, strict=True)
    ]
    return result, rows


async def instruct_section(
    lm: LoadedModel, judge: Judge, export: Any, config: GradeConfig, progress: Progress
) -> dict:
    split = export["validation"]
    source = "instruction" if "instruction" in split.column_names else "instruct_text"
    records = [
        instruct.parse_instruction(t)
        for t in column(export, "validation", source, config.instruct_n)
    ]
    records = [r for r in records if r.header]
    if not records:
        return {"skipped": "no instruction header lines in the validation split"}
    adv = progress.task(f"{lm.name}: instruct stories", len(records))
    settings = GenerationSettings(
        temperature=config.generation.temperature if config.generation.mode == "sample" else 1.0,
        max_new_tokens=config.generation.max_new_tokens,
        seed=config.seed,
    )
    outs = await asyncio.to_thread(
        generate, lm, [r.prompt for r in records], settings, on_batch=adv
    )
    adv = progress.task(f"{lm.name}: judging instructions", len(records))
    judgments = await judge.grade_many(
        [
            (r.prompt, o.text, instruct.instruct_fields(r, o.text))
            for r, o in zip(records, outs, strict=True)
        ],
        on_done=lambda: adv(1),
    )
    rows, shares, scores = [], [], []
    for r, o, j in zip(records, outs, judgments, strict=True):
        present = instruct.required_words_present(o.text, r.words)
        share = sum(present) / len(present) if present else None
        score = j.scores.get("instruction_following") if j.ok else None
        if share is not None:
            shares.append(share)
        if score is not None:
            scores.append(score)
        rows.append(
            {
                "instruction": r.header,
                "story": o.text,
                "words_present": present,
                "word_share": share,
                "judge_score": score,
                "method": j.method,
            }
            | ({"judge": "SIMULATOR"} if judge.simulator else {})
        )
    return {
        "n": len(records),
        "judge_simulator": judge.simulator,
        "judge_score": summarize(scores, seed=config.seed)
        | {"n_completions": len(scores), "n_unscored": len(records) - len(scores)},
        "required_word_share": summarize(shares, seed=config.seed),
        "parse_failures": sum(j.method == "parse_failure" for j in judgments),
        "failures": [
            {"method": j.method, "raw": j.raw or j.error or ""} for j in judgments if not j.ok
        ][:10],
        "examples": rows[:5],
    }


def memorization_section(
    lm: LoadedModel, export: Any, config: GradeConfig, out: Path, progress: Progress
) -> dict:
    held = [s for s in column(export, "validation", "text", config.memorization_n) if s.strip()]
    train = column(export, "train", "text")
    index = memorization.BigramIndex(train)
    cuts = [memorization.split_story(s) for s in held]
    adv = progress.task(f"{lm.name}: memorization", len(cuts))
    outs = generate(lm, [b for b, _ in cuts], config.generation, on_batch=adv)
    vs_true, vs_train, rows = [], [], []
    for (beginning, truth), o in zip(cuts, outs, strict=True):
        r_true = memorization.rouge2_precision(o.text, truth)
        doc, r_train = index.closest(o.text)
        if r_true is not None:
            vs_true.append(r_true)
        if r_train is not None:
            vs_train.append(r_train)
        rows.append(
            {
                "beginning": beginning,
                "completion": o.text,
                "rouge2_vs_continuation": r_true,
                "rouge2_vs_closest_train": r_train,
                "closest_train_id": doc,
            }
        )
    png = out / f"memorization_{lm.name}.png"
    memorization.histogram_png(
        {"vs true continuation": vs_true, "vs closest training story": vs_train},
        str(png),
        f"{lm.name}: Rouge-2 precision of completions",
    )
    texts = [o.text for o in outs]
    return {
        "n": len(rows),
        "train_stories_indexed": len(index),
        "rouge2_vs_continuation_mean": mean_or_none(vs_true),
        "rouge2_vs_closest_train_mean": mean_or_none(vs_train),
        "rouge2_vs_closest_train_max": max(vs_train) if vs_train else None,
        "distinct": {f"distinct_{n}": distinct_n(texts, n) for n in (1, 2, 3)},
        "histogram_png": png.name,
        "examples": rows[:3],
    }


def interpret_section(path: Path, name: str, texts: list[str], prompt: str, out: Path) -> dict:
    lm = load_model(path, eager_attention=True, name=name)
    png = out / f"attention_{name}.png"
    att = interpret.attention_maps(lm, prompt, png)
    rows = interpret.top_activating_tokens(lm, texts)
    md = out / f"neurons_{name}.md"
    md.write_text(
        f"# Top-activating tokens of MLP neurons: {name}\n\n"
        + interpret.neurons_markdown(rows)
        + "\n",
        encoding="utf-8",
    )
    return {"attention": att | {"png": png.name}, "neurons_md": md.name, "neurons": rows[:8]}
