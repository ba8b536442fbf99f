"""One grading run: every evaluation for every model, then the report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from grader import capability, instruct, loss, sections
from grader.answers import ANSWERS_FILE, AnswerLog
from grader.cache import CompletionCache, JudgmentCache
from grader.config import GradeConfig, GradeError, Progress
from grader.exportdata import ExportDirError, column, has_column, load_export
from grader.generation import within_context
from grader.judge import Judge, JudgeTransport, gpt_eval_fields
from grader.judge_client import JudgeCost, transport_for
from grader.models import (
    check_model_dir,
    checkpoint_tokenizer_dir,
    dir_name,
    list_checkpoints,
    load_model,
    unique_names,
    weights_hash,
)
from grader.options import check_minimums, check_output_dir
from grader.resources import (
    GraderOptionError,
    load_capability_suites,
    load_evaluation_prompts,
    load_rubric,
)

log = logging.getLogger(__name__)

INSTRUCT_COLUMN = "instruct_text"


class _Quiet:
    def task(self, description: str, total: int) -> Callable[[int], None]:
        return lambda n=1: None

    def note(self, message: str) -> None:
        log.info("grade_note %s", message)


def check_options(config: GradeConfig) -> None:
    """Option values that cannot work, refused before a model is loaded or a judge is paid."""
    if config.n_prompts is not None and config.n_prompts < 1:
        raise GraderOptionError("--prompts must be >= 1 (the prompt set would be empty)")
    check_minimums(
        {
            "--k": (config.k, 1),
            # 0 is a choice for these: that measurement is left out (n = 0 in the report).
            "--noise-sample": (config.noise_sample, 0),
            "--instruct-n": (config.instruct_n, 0),
            "--memorization-n": (config.memorization_n, 0),
            "--loss-texts": (config.loss_texts, 1),
            "--checkpoint-k": (config.checkpoint_k, 1),
            # numpy's bootstrap generator refuses a negative seed, after the judging is paid.
            "--seed": (config.seed, 0),
        }
    )
    check_output_dir(config.out, "--out")


def validate_inputs(config: GradeConfig) -> dict[str, Any]:
    """Everything checkable before the expensive work: options, model dirs, prompts, export."""
    check_options(config)
    for m in config.models:
        check_model_dir(m)
    prompts = load_evaluation_prompts(config.prompts_file)
    if config.n_prompts is not None:
        prompts = prompts[: config.n_prompts]
    suites = load_capability_suites(only=config.suites) if config.suites != [] else None
    export = load_export(config.data) if config.data else None
    if export is not None:
        if "train" not in export:
            raise ExportDirError(f"{config.data}: export has no train split (memorization)")
        if config.instruct == "on" and not has_column(export, "validation", INSTRUCT_COLUMN):
            raise GraderOptionError(
                f"--instruct on needs an export with an {INSTRUCT_COLUMN!r} column; "
                f"{config.data} holds plain stories"
            )
    names = unique_names(config.models)
    return {"prompts": prompts, "suites": suites, "export": export, "names": names}


async def _grade_model(
    path: Path,
    name: str,
    judges: list[Judge],
    ijudge: Judge,
    inputs: dict,
    config: GradeConfig,
    progress: Progress,
) -> dict:
    judge = judges[0]
    out = config.out
    lm = await asyncio.to_thread(load_model, path, name=name)
    if name != dir_name(path):
        progress.note(f"{path} is reported as {name}: another --model has the same dir name")
    progress.note(
        f"grading {name} ({lm.n_params:,} parameters): loss and generation stay within its "
        f"trained context of {lm.context_length} tokens ({lm.context_source})"
    )
    entry: dict[str, Any] = {"model": lm.describe(), "training": lm.training}
    fitted = within_context(lm, config.generation)
    if fitted.max_new_tokens != config.generation.max_new_tokens:
        progress.note(
            f"{name}: --max-new-tokens {config.generation.max_new_tokens} does not fit its "
            f"context of {lm.context_length}; completions get {fitted.max_new_tokens} new tokens"
        )
        entry["model"]["max_new_tokens_used"] = fitted.max_new_tokens
    ccache = inputs["completion_cache"]
    gpt, rows = await sections.gpt_eval_section(
        lm,
        judge,
        inputs["prompts"],
        config.k,
        config.generation,
        progress,
        name,
        config.noise_sample,
        config.seed,
        cache=ccache,
    )
    entry["gpt_eval"] = gpt
    if len(judges) > 1:
        entry["agreement"] = await sections.agreement_section(
            judges, inputs["prompts"], rows, progress, name
        )
    sections.write_jsonl(out / "completions" / f"{name}.jsonl", rows)
    if inputs["suites"] is not None:
        caps = await asyncio.to_thread(capability.run_suites, lm, inputs["suites"])
        if config.judge_suites:
            js = await judge.grade_many(
                [
                    (c["prompt"], c["completion"], gpt_eval_fields(c["prompt"], c["completion"]))
                    for c in caps
                ]
            )
            for c, j in zip(caps, js, strict=True):
                c["judge_consistency"] = j.scores.get("consistency") if j.ok else None
        entry["capability"] = {"rows": caps, "table": capability.suite_table(caps)}
    export = inputs["export"]
    texts = inputs["prompts"][:16]
    if export is not None:
        is_instruct = config.instruct == "on" or (
            config.instruct == "auto" and instruct.is_instruct_model(lm.training)
        )
        if is_instruct and not has_column(export, "validation", INSTRUCT_COLUMN):
            # Only reachable with auto (validate_inputs refuses `on`): a text-file export holds
            # plain stories, so this instruct model is graded as a plain one.
            progress.note(f"{name}: the export has no instruct records; graded on plain stories")
            is_instruct = False
        col = INSTRUCT_COLUMN if is_instruct else "text"
        val = column(export, "validation", col, config.loss_texts)
        adv = progress.task(f"{name}: validation loss", 1)
        entry["loss"] = await asyncio.to_thread(loss.evaluate_loss, lm, val)
        entry["loss"]["split"] = f"validation[:{len(val)}] ({col})"
        adv(1)
        entry["memorization"] = await asyncio.to_thread(
            sections.memorization_section, lm, export, config, out, progress
        )
        if is_instruct:
            entry["instruct"] = await sections.instruct_section(
                lm, ijudge, export, config, progress
            )
        texts = column(export, "validation", "text", 16)
    prompt = config.attention_prompt or inputs["prompts"][0]
    entry["interpret"] = await asyncio.to_thread(
        sections.interpret_section, path, name, texts, prompt, out
    )
    if config.checkpoints:
        entry["checkpoints"] = []
        for step, ck in list_checkpoints(path):
            tok_dir = checkpoint_tokenizer_dir(path, ck)
            if await asyncio.to_thread(weights_hash, ck, tok_dir) == lm.weights_sha:
                # The last checkpoint is usually the final model: graded once, reported twice.
                entry["checkpoints"].append(
                    {"step": step, "same_as_final": True, "gpt_eval": _ck_summary(gpt)}
                    | ({"loss": entry["loss"]} if "loss" in entry else {})
                )
                continue
            ck_lm = await asyncio.to_thread(
                load_model,
                ck,
                name=f"{name}@{step}",
                tokenizer_dir=tok_dir,
            )
            gpt_ck, _ = await sections.gpt_eval_section(
                ck_lm,
                judge,
                inputs["prompts"],
                config.checkpoint_k,
                config.generation,
                progress,
                ck_lm.name,
                0,
                config.seed,
                cache=ccache,
            )
            row = {"step": step, "gpt_eval": _ck_summary(gpt_ck)}
            if export is not None:
                row["loss"] = await asyncio.to_thread(loss.evaluate_loss, ck_lm, val)
            entry["checkpoints"].append(row)
    log.info("model_graded name=%s params=%d", name, lm.n_params)
    return entry


def _ck_summary(gpt: dict) -> dict:
    keep = ("overall", "parse_failures", "n_completions", "judge_simulator")
    return {k: gpt[k] for k in keep if k in gpt}


async def _run(config: GradeConfig, inputs: dict, progress: Progress, cost: JudgeCost) -> dict:
    rubric = load_rubric()
    instruct_rubric = load_rubric("instruct_rubric.yaml")
    cache = JudgmentCache(config.cache_path or config.out / "judge_cache.jsonl")
    inputs["completion_cache"] = CompletionCache(
        config.completion_cache_path or config.out / "completion_cache.jsonl"
    )
    js = config.judge
    assert js is not None
    async with contextlib.AsyncExitStack() as stack:
        transports = []
        for model in [js.model, *config.extra_judges]:
            transport = await stack.enter_async_context(transport_for(js, cost, model))
            await _preflight(transport)
            transports.append(transport)
        opts = {
            "concurrency": js.concurrency,
            "rejudge_failures": config.rejudge_failures,
            "answers": AnswerLog(config.out / ANSWERS_FILE),
        }
        judges = [Judge(t, rubric, cache, **opts) for t in transports]
        judge = judges[0]
        ijudge = Judge(transports[0], instruct_rubric, cache, **opts)
        models = []
        for path, name in zip(config.models, inputs["names"], strict=True):
            models.append(await _grade_model(path, name, judges, ijudge, inputs, config, progress))
        stats = judge.stats.to_dict()
        stats["instruct"] = ijudge.stats.to_dict()
    return {
        "models": models,
        "judge_stats": stats,
        "cache_entries": len(cache),
        "completion_cache_entries": len(inputs["completion_cache"]),
    }


async def _preflight(transport: JudgeTransport) -> None:
    """One tiny call before hours of generation: an unreachable judge fails in seconds."""
    await transport.chat([{"role": "user", "content": "Reply with the word OK."}])


def grade(
    config: GradeConfig, progress: Progress | None = None, inputs: dict[str, Any] | None = None
) -> dict:
    """Run every evaluation and write report.md, report.json and the plots into config.out."""
    from grader import report

    if config.judge is None:
        raise GradeError("no judge configured")
    progress = progress or _Quiet()
    inputs = inputs or validate_inputs(config)
    try:
        config.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a permission or a race with validate_inputs' check
        raise GradeError(f"--out {config.out}: cannot make the directory ({exc})") from exc
    started = time.time()
    cost = JudgeCost()
    result = asyncio.run(_run(config, inputs, progress, cost))
    result.update(
        {
            "judge": config.judge.public()
            | {
                "rubric_version": load_rubric().version,
                "instruct_rubric_version": load_rubric("instruct_rubric.yaml").version,
            },
            "cost": cost.to_dict(),
            "settings": {
                "k": config.k,
                "prompts": len(inputs["prompts"]),
                "generation": config.generation.to_dict(),
                "noise_sample": config.noise_sample,
                "checkpoint_k": config.checkpoint_k,
                "data": str(config.data) if config.data else None,
            },
            "elapsed_s": round(time.time() - started, 1),
        }
    )
    report.write_report(result, config.out)
    return result


def config_dict(config: GradeConfig) -> dict:
    d = asdict(config)
    d["judge"] = config.judge.public() if config.judge else None
    return json.loads(json.dumps(d, default=str))
