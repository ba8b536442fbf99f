"""Command-line commands of the trainer package: `train`, `sample`, `train-presets`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from trainer.textdata import TEXT_HELP

log = logging.getLogger(__name__)


def _fail(message: str, code: int = 2) -> typer.Exit:
    """One error line; exit 2 for a wrong command line, 1 (code=1) when the run failed."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _quiet_libraries() -> None:
    import transformers

    try:  # text-file exports need no datasets
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def train_command(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Export directory: a saved dataset (dataset_dict.json), or <|endoftext|>-"
            "separated text files: " + TEXT_HELP + ".",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    preset: Annotated[str, typer.Option(help="Model preset, or LAYERSxHIDDEN.")] = "1M",
    max_steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 1000,
    tokens: Annotated[
        int | None, typer.Option(help="Token budget (overrides --max-steps).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Micro-batch per device.")] = 16,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per step.")] = 1,
    seq_len: Annotated[int, typer.Option(help="Tokens per training window.")] = 512,
    time_limit_s: Annotated[
        float | None,
        typer.Option(
            help="Stop, evaluate and save after this many seconds of training, counted across "
            "resumes (raise it to train on)."
        ),
    ] = None,
    format: Annotated[str, typer.Option("--format", help="plain or instruct.")] = "plain",
    include_rejected: Annotated[
        bool,
        typer.Option(
            "--include-rejected",
            help="Also train on stories that failed the checks (an export made with "
            "--include-rejected); by default they are left out.",
        ),
    ] = False,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary when training one.")] = 10_000,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Use this tokenizer directory instead of training one.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 5e-4,
    schedule: Annotated[str, typer.Option(help="cosine or constant.")] = "cosine",
    warmup_steps: Annotated[int, typer.Option()] = 100,
    eval_every: Annotated[int, typer.Option()] = 200,
    checkpoint_every: Annotated[int, typer.Option()] = 500,
    log_every: Annotated[int, typer.Option()] = 10,
    seed: Annotated[int, typer.Option()] = 1337,
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="torch.compile [default: on for CUDA]."),
    ] = None,
    compile_mode: Annotated[
        str,
        typer.Option(
            help="default, or tuned (benchmarks the fused elementwise kernels: longer compile)."
        ),
    ] = "default",
    bf16: Annotated[bool, typer.Option("--bf16/--no-bf16", help="bf16 autocast on GPU.")] = True,
    residual_dtype: Annotated[
        str,
        typer.Option(
            help="The residual stream's dtype: auto (bf16 in bf16 GPU runs), fp32 or bf16 (GPU)."
        ),
    ] = "auto",
    local_attention: Annotated[
        str, typer.Option(help="GPT-Neo local layers: auto, flash or flex (CUDA), or sdpa.")
    ] = "auto",
    final_eval_tokens: Annotated[
        int | None,
        typer.Option(
            help="Score a seeded sample of this many validation tokens at the end "
            "[default: the whole split]."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="Continue from OUT/checkpoints; --no-resume deletes them and starts over.",
        ),
    ] = True,
    cache_dir: Annotated[Path | None, typer.Option(help="Tokenizer/token cache.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
) -> None:
    """Train a TinyStories model on an exported dataset."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from generator.progress import Progress as LineProgress
    from trainer.config import OptionError, TrainConfig, TrainerError, choice_problem
    from trainer.presets import get_preset, human

    given = {
        "format": format,
        "local_attention": local_attention,
        "compile_mode": compile_mode,
        "residual_dtype": residual_dtype,
        "schedule": schedule,
    }
    for name, value in given.items():
        problem = choice_problem(name, value, label="--" + name.replace("_", "-"))
        if problem:
            raise _fail(problem)
    try:
        get_preset(preset)
    except TrainerError as exc:
        raise _fail(str(exc)) from None
    _quiet_libraries()
    from trainer.train import StepInfo, train

    cfg = TrainConfig(
        data=str(data),
        out=str(out),
        preset=preset,
        max_steps=max_steps,
        tokens=tokens,
        batch_size=batch_size,
        grad_accum=grad_accum,
        seq_len=seq_len,
        time_limit_s=time_limit_s,
        format=format,
        include_rejected=include_rejected,
        vocab_size=vocab_size,  # type: ignore[arg-type]
        tokenizer=str(tokenizer) if tokenizer else None,
        device=device,
        lr=lr,
        schedule=schedule,  # type: ignore[arg-type]
        warmup_steps=warmup_steps,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        seed=seed,
        compile=compile,
        compile_mode=compile_mode,  # type: ignore[arg-type]
        bf16=bf16,
        residual_dtype=residual_dtype,  # type: ignore[arg-type]
        local_attention=local_attention,  # type: ignore[arg-type]
        final_eval_tokens=final_eval_tokens,
        resume=resume,
        cache_dir=str(cache_dir) if cache_dir else None,
        threads=threads,
    )
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]train {task.fields[preset]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  {task.fields[rate]} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = None
    # Off a terminal (nohup, docker logs, CI) the bar prints nothing: a line every few seconds.
    lines: LineProgress | None = None
    latest = {"loss": "", "val": "", "rate": ""}

    def on_step(info: StepInfo) -> None:
        nonlocal task, lines
        if not console.is_terminal:
            if lines is None:  # the clock starts at the first step, not during set-up
                lines = LineProgress("train", unit="steps", start_at=info.step - 1)
            if info.loss is not None:
                latest["loss"] = f"loss {info.loss:.3f}"
            if info.val_loss is not None:
                latest["val"] = f"val {info.val_loss:.3f}"
            if info.tokens_per_s:
                latest["rate"] = f"{info.tokens_per_s:,.0f} tok/s"
            detail = " ".join(part for part in latest.values() if part)
            lines.update(info.step, total=info.max_steps, detail=detail)
            return
        if task is None:  # started lazily: setup errors print without a progress frame
            progress.start()
            task = progress.add_task(
                "train",
                total=info.max_steps,
                completed=info.step - 1,
                preset=preset,
                loss="-",
                val="-",
                rate="-",
            )
        fields = {}
        if info.loss is not None:
            fields["loss"] = f"{info.loss:.3f}"
        if info.val_loss is not None:
            fields["val"] = f"{info.val_loss:.3f}"
        if info.tokens_per_s:
            fields["rate"] = f"{info.tokens_per_s:,.0f}"
        # A time limit moves the schedule's horizon to the steps that fit: the bar follows it.
        progress.update(task, completed=info.step, total=info.max_steps, **fields)

    try:
        result = train(cfg, on_step=on_step)
    except TrainerError as exc:
        raise _fail(str(exc), 2 if isinstance(exc, OptionError) else 1) from None
    except KeyboardInterrupt as exc:
        progress.stop()
        raise _fail(_interrupted(exc, out), 1) from None
    finally:
        progress.stop()
    resumed = (
        f", resumed from step {result.resumed_from}" if result.resumed_from is not None else ""
    )
    if result.vocab_note:
        typer.echo(f"note: {result.vocab_note}", err=True)
    if result.rejected_note:
        typer.echo(f"note: {result.rejected_note}", err=True)
    mfu = f", MFU {result.steady_mfu or result.mfu:.1%}" if result.mfu else ""
    typer.echo(
        f"trained {preset} ({human(result.params)} params, {human(result.params_non_embedding)} "
        f"without embeddings): {result.steps} steps, {result.tokens_seen:,} tokens in "
        f"{result.elapsed_s:.0f}s ({result.tokens_per_s:,.0f} tokens/s{mfu}), val loss "
        f"{result.val_loss:.4f} ({result.bits_per_byte:.3f} bits/byte), stopped by "
        f"{result.stopped}{resumed} -> {result.out}"
    )


def _interrupted(exc: KeyboardInterrupt, out: Path) -> str:
    """The Ctrl-C line: which step a rerun of the same command continues from, if any."""
    from trainer.checkpoint import latest_checkpoint
    from trainer.stopping import Interrupted

    latest = latest_checkpoint(out)
    if latest is None:
        return "interrupted before the first checkpoint; nothing to resume"
    at = f" at step {exc.step}" if isinstance(exc, Interrupted) else ""
    return f"interrupted{at}; run the same command again to resume from {latest}"


def sample_command(
    model: Annotated[Path, typer.Option("--model", help="Model directory.")],
    prompt: Annotated[str, typer.Option(help="Story beginning.")] = "Once upon a time",
    max_new_tokens: Annotated[int, typer.Option()] = 120,
    temperature: Annotated[float, typer.Option()] = 0.8,
    top_k: Annotated[int, typer.Option(help="0 disables top-k.")] = 50,
    n: Annotated[int, typer.Option(help="Number of samples.")] = 1,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Continue a prompt with a trained model (an empty prompt starts a story)."""
    from trainer.config import OptionError, TrainerError
    from trainer.sample import check_sampling, generate

    try:
        check_sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, n=n)
    except OptionError as exc:
        raise _fail(str(exc)) from None
    if not (model / "config.json").is_file():
        raise _fail(f"{model} is not a model directory (no config.json)", 1)
    _quiet_libraries()

    try:
        texts = generate(
            model,
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            n=n,
            seed=seed,
            device=device,
        )
    except TrainerError as exc:
        raise _fail(str(exc), 2 if isinstance(exc, OptionError) else 1) from None
    for i, text in enumerate(texts):
        if i:
            typer.echo("-" * 40)
        typer.echo(text)


def presets_command(
    vocab_size: Annotated[
        int | None,
        typer.Option(help="Tokenizer vocabulary size [default: the one each name assumes]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the model presets with their parameter counts."""
    from trainer.presets import PRESETS, formula_counts, human

    if as_json:
        import json

        rows = []
        for name, p in PRESETS.items():
            vocab = vocab_size or p.name_vocab
            total, non_embed = formula_counts(name, vocab_size=vocab)
            rows.append(
                {
                    "preset": name,
                    "arch": p.arch,
                    "layers": p.layers,
                    "hidden": p.hidden,
                    "heads": p.heads,
                    "context": p.context,
                    "vocab": vocab,
                    "params": total,
                    "non_embedding_params": non_embed,
                }
            )
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(
        f"{'preset':<10} {'arch':<8} {'layers':>6} {'hidden':>6} {'vocab':>7} {'params':>9} "
        f"{'no-embed':>9}"
    )
    for name, p in PRESETS.items():
        vocab = vocab_size or p.name_vocab
        total, non_embed = formula_counts(name, vocab_size=vocab)
        typer.echo(
            f"{name:<10} {p.arch:<8} {p.layers:>6} {p.hidden:>6} {vocab:>7,} {human(total):>9} "
            f"{human(non_embed):>9}"
        )
    typer.echo(
        "Names count parameters at the vocabulary they assume (the paper's 10k; llama2.c's 32k); "
        "a smaller tokenizer makes a smaller model."
    )


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `tinystories` application."""
    app.command("train")(train_command)
    app.command("sample")(sample_command)
    app.command("train-presets")(presets_command)
