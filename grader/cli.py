"""Command-line commands of the grader package."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperCommand

SIMULATOR_JUDGE = "simulator-judge-1"


class _PlainHelp(TyperCommand):
    """Click's own help layout: rich's option table cuts long flag names ("--judge-concurre…")
    on an 80-column terminal; click's puts a long name on its own line instead."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.rich_markup_mode = None
        super().format_help(ctx, formatter)


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    """An option check failing inside is one line and exit 2: the command line is wrong."""
    from grader.resources import GraderOptionError

    try:
        yield
    except GraderOptionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _quiet_libraries() -> None:
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def grade_command(
    model: Annotated[list[Path], typer.Option("--model", help="Model dir (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Report directory.")],
    judge: Annotated[str, typer.Option("--judge", help="Judge model name.")] = "gpt-4",
    judge_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL.")] = None,
    judge_api_key: Annotated[str | None, typer.Option(help="Judge API key.")] = None,
    judge_rpm: Annotated[int | None, typer.Option(help="Judge requests/minute limit.")] = None,
    judge_tpm: Annotated[int | None, typer.Option(help="Judge tokens/minute limit.")] = None,
    judge_concurrency: Annotated[int, typer.Option(help="Concurrent judge calls.")] = 32,
    judge_max_attempts: Annotated[int, typer.Option(help="Tries per judge request.")] = 4,
    data: Annotated[Path | None, typer.Option("--data", help="Export dir (loss etc).")] = None,
    k: Annotated[int, typer.Option("--k", help="Completions per prompt.")] = 10,
    prompts: Annotated[int | None, typer.Option("--prompts", help="First N prompts.")] = None,
    prompts_file: Annotated[Path | None, typer.Option(help="YAML list of prompts.")] = None,
    suites: Annotated[str | None, typer.Option(help="Comma list; 'none' to skip.")] = None,
    judge_suites: Annotated[bool, typer.Option(help="Also judge suite answers.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    greedy: Annotated[bool, typer.Option(help="Temperature 0.")] = False,
    beams: Annotated[int, typer.Option(help="Beam search with N beams (temp 0).")] = 1,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per completion.")] = 200,
    batch_size: Annotated[int, typer.Option(help="Generation batch size.")] = 32,
    noise_sample: Annotated[int, typer.Option(help="Completions graded twice.")] = 20,
    instruct: Annotated[str, typer.Option(help="Instruct eval: auto|on|off.")] = "auto",
    instruct_n: Annotated[int, typer.Option(help="Held-out instructions.")] = 20,
    memorization_n: Annotated[int, typer.Option(help="Held-out beginnings.")] = 20,
    loss_texts: Annotated[int, typer.Option(help="Validation stories for loss.")] = 200,
    checkpoints: Annotated[bool, typer.Option(help="Grade checkpoints/step-N.")] = True,
    checkpoint_k: Annotated[int, typer.Option(help="Completions/prompt for checkpoints.")] = 2,
    attention_prompt: Annotated[str | None, typer.Option(help="Prompt for attention.")] = None,
    cache: Annotated[Path | None, typer.Option(help="Judgment cache (JSONL).")] = None,
    completion_cache: Annotated[
        Path | None, typer.Option(help="Completion cache (JSONL; default OUT/).")
    ] = None,
    rejudge_failures: Annotated[
        bool, typer.Option(help="Ask the judge again for cached unreadable answers.")
    ] = False,
    judge_max_tokens: Annotated[int, typer.Option(help="Judge answer token limit.")] = 400,
    extra_judge: Annotated[
        list[str] | None,
        typer.Option(help="Another judge model at the same endpoint (repeatable): agreement."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling / bootstrap seed.")] = 0,
) -> None:
    """Grade models the paper's way (GPT-Eval and more) and write a report."""
    import logging

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from grader.config import GradeConfig, GradeError, RichProgress
    from grader.exportdata import ExportDirError
    from grader.generation import GenerationSettings
    from grader.judge import JudgeUnavailable
    from grader.models import ModelDirError
    from grader.options import check_minimums
    from grader.resources import GraderDataError, GraderOptionError
    from grader.run import grade, validate_inputs

    err = Console(stderr=True)

    def fail(message: str, code: int = 2) -> None:
        """One line; exit 2 for a wrong command line, 1 when grading itself failed."""
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code)

    if instruct not in ("auto", "on", "off"):
        fail("--instruct must be auto, on or off")
    counts = {"--beams": beams, "--max-new-tokens": max_new_tokens, "--batch-size": batch_size}
    counts |= {"--judge-concurrency": judge_concurrency, "--judge-rpm": judge_rpm}
    counts |= {"--judge-max-attempts": judge_max_attempts, "--judge-tpm": judge_tpm}
    counts |= {"--judge-max-tokens": judge_max_tokens}
    with _usage_errors():
        # A negative temperature would silently mean greedy decoding.
        check_minimums({f: (v, 1) for f, v in counts.items()} | {"--temperature": (temperature, 0)})
    logging.basicConfig(level=logging.WARNING)
    settings = GenerationSettings(
        temperature=0.0 if (greedy or beams > 1) else temperature,
        num_beams=beams,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
    )
    suite_list = (
        None
        if suites is None
        else (
            [] if suites.strip().lower() == "none" else [s.strip() for s in suites.split(",") if s]
        )
    )
    config = GradeConfig(
        models=list(model),
        out=out,
        data=data,
        k=k,
        n_prompts=prompts,
        prompts_file=prompts_file,
        suites=suite_list,
        judge_suites=judge_suites,
        generation=settings,
        noise_sample=noise_sample,
        instruct=instruct,
        instruct_n=instruct_n,
        memorization_n=memorization_n,
        loss_texts=loss_texts,
        checkpoints=checkpoints,
        checkpoint_k=checkpoint_k,
        attention_prompt=attention_prompt,
        cache_path=cache,
        completion_cache_path=completion_cache,
        rejudge_failures=rejudge_failures,
        extra_judges=list(extra_judge or []),
        seed=seed,
    )
    limits = {
        "rpm": judge_rpm,
        "tpm": judge_tpm,
        "concurrency": judge_concurrency,
        "max_attempts": judge_max_attempts,
        "max_tokens": judge_max_tokens,
    }
    try:
        # Bad models, prompts or data fail here, before a simulator or judge is started.
        inputs = validate_inputs(config)
        with contextlib.ExitStack() as stack:
            config.judge = _judge_settings(
                stack, judge, judge_base_url, judge_api_key, limits, seed
            )
            _quiet_libraries()
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            bars = RichProgress(Progress(*columns, console=err), err)
            stack.callback(bars.stop)
            result = grade(config, progress=bars, inputs=inputs)
    except (ModelDirError, GraderDataError, ExportDirError, JudgeUnavailable, GradeError) as exc:
        fail(
            f"{exc} (judgments made so far are cached; rerun to continue)"
            if isinstance(exc, JudgeUnavailable)
            else str(exc),
            2 if isinstance(exc, GraderOptionError) else 1,
        )
    except KeyboardInterrupt:
        typer.echo("interrupted: judgments made so far are cached; rerun to continue", err=True)
        raise typer.Exit(130) from None
    _print_table(result)
    if result["cost"]["unpriced_models"]:
        from grader.judge_client import unpriced_note

        typer.echo(f"note: {unpriced_note(result['cost']['unpriced_models'])}", err=True)
    typer.echo(f"report: {out / 'report.md'}")
    typer.echo(result["summary"])


def _judge_settings(stack, judge: str, base_url, api_key, limits: dict, seed: int):
    """The judge from flags or OPENAI_* variables; without either, a simulator started here."""
    from rich.console import Console

    from grader.config import JudgeSettings
    from grader.report import SIM_WARNING

    api_key = api_key or os.environ.get("OPENAI_API_KEY")
    base_url = base_url or os.environ.get("OPENAI_BASE_URL")
    if not api_key and not base_url:
        from generator.simulator import SimulatorConfig, run_simulator

        Console(stderr=True).print(f"[bold red]WARNING: no OPENAI_API_KEY: {SIM_WARNING}[/]")
        sim_url = stack.enter_context(run_simulator(SimulatorConfig(seed=seed)))
        return JudgeSettings(
            model=SIMULATOR_JUDGE,
            base_url=sim_url,
            api_key="simulator",
            simulator=True,
            requested_model=judge,
            **limits,
        )
    return JudgeSettings(
        model=judge,
        base_url=base_url or "https://api.openai.com/v1",
        api_key=api_key or "none",
        **limits,
    )


def pairwise_command(
    model: Annotated[list[Path], typer.Option("--model", help="Model A, then optional model B.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Export dir: one model vs true endings.")
    ] = None,
    judge: Annotated[str, typer.Option("--judge", help="Judge model name.")] = "gpt-4",
    judge_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL.")] = None,
    judge_api_key: Annotated[str | None, typer.Option(help="Judge API key.")] = None,
    n: Annotated[int, typer.Option("--n", help="Pairs (prompts or held-out stories).")] = 20,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per completion.")] = 200,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling / bootstrap seed.")] = 0,
) -> None:
    """Pairwise win rate (both orders judged): two models, or one model vs the true endings."""
    from grader.exportdata import ExportDirError
    from grader.generation import GenerationSettings
    from grader.judge import JudgeUnavailable
    from grader.models import ModelDirError
    from grader.options import check_minimums
    from grader.pairwise import PairwiseConfig, run_pairwise, summary_line

    if not 1 <= len(model) <= 2 or (len(model) == 1 and data is None) or n < 1:
        typer.echo("error: give two --model, or one --model and --data; --n >= 1", err=True)
        raise typer.Exit(2)
    limits = {"--max-new-tokens": (max_new_tokens, 1), "--temperature": (temperature, 0)}
    with _usage_errors():
        check_minimums(limits | {"--seed": (seed, 0)})
    config = PairwiseConfig(
        model_a=model[0],
        model_b=model[1] if len(model) == 2 else None,
        out=out,
        data=data,
        n=n,
        generation=GenerationSettings(
            temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
        ),
        seed=seed,
    )
    try:
        with contextlib.ExitStack() as stack:
            config.judge = _judge_settings(stack, judge, judge_base_url, judge_api_key, {}, seed)
            _quiet_libraries()
            result = run_pairwise(config)
    except (ModelDirError, ExportDirError, JudgeUnavailable, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"report: {out / 'pairwise.md'}")
    typer.echo(summary_line(result))


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from grader.report import SIM_MARK

    sim = bool(result["judge"].get("simulator"))
    mark = SIM_MARK if sim else ""
    title = "GPT-Eval (paper-style)" + (": SIMULATOR judge, not an LLM" if sim else "")
    table = Table(title=title)
    for col in (
        "model",
        "params",
        "eval loss",
        "grammar",
        "creativity",
        "consistency",
        "plot",
        "age",
        "n (unreadable)",
    ):
        table.add_column(col)

    def f(v, d=2):
        return "-" if v is None else f"{v:.{d}f}"

    def score(r: dict, c: str) -> str:
        return "-" if r[c] is None else f"{r[c]:.2f}{mark} n={r[f'{c}_n']}"

    for r in result["table"]:
        table.add_row(
            r["model"],
            f"{r['params']:,}",
            f(r["eval_loss"], 3),
            *(score(r, c) for c in ("grammar", "creativity", "consistency", "plot")),
            (r["age_group"] + mark) if r["age_group"] else "-",
            f"{r['n_completions']} ({r['parse_failures']})",
        )
    Console().print(table)


def loss_command(
    model: Annotated[Path, typer.Option("--model", help="Model dir.")],
    data: Annotated[Path, typer.Option("--data", help="Export dir.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "validation",
    texts: Annotated[int, typer.Option(help="Stories to score.")] = 200,
    column: Annotated[str, typer.Option(help="text or instruct_text.")] = "text",
    context_length: Annotated[int | None, typer.Option(help="Window (default: model's).")] = None,
) -> None:
    """Loss, perplexity and bits per UTF-8 byte of a model on an export split."""
    from grader.exportdata import ExportDirError, load_export
    from grader.exportdata import column as read_column
    from grader.loss import evaluate_loss
    from grader.models import ModelDirError, load_model
    from grader.options import check_minimums

    with _usage_errors():
        # Without this, 0 silently meant the model's whole context and -5 "no text".
        check_minimums({"--texts": (texts, 1), "--context-length": (context_length, 1)})
    try:
        dd = load_export(data)
        stories = read_column(dd, split, column, texts)
        _quiet_libraries()
        res = evaluate_loss(load_model(model), stories, context_length=context_length)
    except (ModelDirError, ExportDirError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{model.name}: loss {res['loss']:.4f} perplexity {res['perplexity']:.2f} "
        f"bits/byte {res['bits_per_byte']:.4f} on {split}[:{res['texts']}] ({column}), "
        f"context {res['context_length']}, tokenizer {res['tokenizer']}"
    )


def attention_command(
    model: Annotated[Path, typer.Option("--model", help="Model dir.")],
    prompt: Annotated[str, typer.Option("--prompt", help="Text to look at.")],
    out: Annotated[Path, typer.Option("--out", help="PNG path.")],
) -> None:
    """Attention maps of every head for one prompt, as a PNG grid."""
    from grader.interpret import attention_maps
    from grader.models import ModelDirError, load_model
    from grader.options import prepare_output_file

    with _usage_errors():
        prepare_output_file(out, "--out")
    try:
        _quiet_libraries()
        info = attention_maps(load_model(model, eager_attention=True), prompt, out)
    except (ModelDirError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{out}: {info['layers']} layers x {info['heads']} heads, {info['tokens']} tokens")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `tinystories` application."""
    app.command("grade", cls=_PlainHelp)(grade_command)
    app.command("grade-loss", cls=_PlainHelp)(loss_command)
    app.command("grade-pairwise", cls=_PlainHelp)(pairwise_command)
    app.command("grade-attention", cls=_PlainHelp)(attention_command)
