"""`tinystories demo`: the whole pipeline on one machine, offline by default.

Generation service (embedded Postgres, simulator when no provider is configured, API, worker,
one job over REST) -> export -> a tiny model trained for about two minutes on CPU -> samples ->
GPT-Eval with the simulator as judge. Each stage runs as its own `tinystories` command, so the
demo shows exactly what a user would type, and nothing is left running at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import typer


def _stage(title: str, args: list[str]) -> None:
    typer.secho(f"\n== {title}: tinystories {' '.join(args)}", bold=True, err=True)
    result = subprocess.run([sys.executable, "-m", "tinystories", *args], check=False)
    if result.returncode != 0:
        raise typer.Exit(result.returncode)


def run_pipeline(
    *,
    n_stories: int,
    budget_usd: float,
    train_seconds: float,
    grade_prompts: int,
    grade_k: int,
    skip_train: bool,
) -> None:
    """Run every stage; stop the embedded database whatever happens."""
    from service.settings import Settings
    from service.supervise import run_demo

    settings = Settings()
    out = Path(settings.home) / "demo"
    # Each run writes fresh outputs; the database keeps every run's stories.
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    export_dir, model_dir, report_dir = out / "export", out / "model", out / "report"
    try:
        provider = "the LLM SIMULATOR" if settings.uses_simulator else "the configured provider"
        typer.secho(
            f"== generation service: 1 job over REST, stories from {provider} "
            f"(API and worker logs: {out / 'service.log'})",
            bold=True,
            err=True,
        )
        job = run_demo(
            settings,
            n_stories=n_stories,
            budget_usd=budget_usd,
            keep_database=True,
            server_log=out / "service.log",
        )
        _stage("export", ["export", "--out", str(export_dir), "--job", str(job["id"])])
        if skip_train:
            return
        _stage(
            "train",
            [
                "train", "--data", str(export_dir), "--preset", "1M", "--out", str(model_dir),
                # Short windows, a small vocabulary and a high learning rate: what learns
                # most in two CPU minutes.
                "--seq-len", "128", "--batch-size", "16", "--vocab-size", "4096",
                "--lr", "3e-3", "--warmup-steps", "30",
                "--max-steps", "5000", "--time-limit-s", str(train_seconds),
                "--eval-every", "100", "--checkpoint-every", "100000",
            ],
        )  # fmt: skip
        _stage(
            "sample",
            ["sample", "--model", str(model_dir), "--prompt", "Once upon a time", "--n", "2"],
        )
        _stage(
            "grade",
            [
                "grade", "--model", str(model_dir), "--judge", "simulator-judge-1",
                "--data", str(export_dir), "--out", str(report_dir),
                "--prompts", str(grade_prompts), "--k", str(grade_k),
            ],
        )  # fmt: skip
        typer.secho(
            f"\ndemo finished: export {export_dir}, model {model_dir}, "
            f"report {report_dir / 'report.md'}",
            bold=True,
            err=True,
        )
    finally:
        if not settings.database_url:
            from service.pgserver import EmbeddedPostgres

            EmbeddedPostgres(settings.pg_dir).stop()


def demo(
    n_stories: int = typer.Option(500, help="Stories in the demo job."),
    budget_usd: float = typer.Option(5.0, help="Budget of the demo job in USD."),
    train_seconds: float = typer.Option(120.0, help="CPU training time of the demo model."),
    grade_prompts: int = typer.Option(44, help="GPT-Eval prompts to grade (of the 44)."),
    grade_k: int = typer.Option(2, help="Completions per GPT-Eval prompt."),
    skip_train: bool = typer.Option(False, help="Stop after the export."),
) -> None:
    """The whole pipeline offline: service, 500 stories, export, train, sample, grade."""
    run_pipeline(
        n_stories=n_stories,
        budget_usd=budget_usd,
        train_seconds=train_seconds,
        grade_prompts=grade_prompts,
        grade_k=grade_k,
        skip_train=skip_train,
    )
