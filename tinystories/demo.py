"""`tinystories demo`: the whole pipeline on one machine, offline by default.

Generation service (embedded Postgres, simulator when no provider is configured, API, worker,
one job over REST) -> export -> a tiny model trained for about two minutes on CPU -> samples ->
GPT-Eval with the simulator as judge. Each stage runs as its own `tinystories` command, so the
demo shows exactly what a user would type, and nothing is left running at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from service.settings import Settings

# What selects a paid provider. The demo hides them from every stage unless the user asks for
# the real provider with --real-provider: a key exported for other work must not spend money.
PROVIDER_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL")


def _stage(title: str, args: list[str], env: dict[str, str]) -> None:
    typer.secho(f"\n== {title}: tinystories {' '.join(args)}", bold=True, err=True)
    result = subprocess.run([sys.executable, "-m", "tinystories", *args], check=False, env=env)
    if result.returncode != 0:
        raise typer.Exit(result.returncode)


def stage_environment(real_provider: bool) -> dict[str, str]:
    """The environment of every demo stage: without provider variables unless asked for."""
    if real_provider:
        return dict(os.environ)
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARIABLES}
    env["TINYSTORIES_SIMULATOR_ONLY"] = "1"  # a key in .env must not count either
    return env


def run_pipeline(
    *,
    n_stories: int,
    budget_usd: float,
    train_seconds: float,
    grade_prompts: int,
    grade_k: int,
    skip_train: bool,
    real_provider: bool = False,
) -> None:
    """Run every stage; stop the embedded database whatever happens."""
    from service.settings import SettingsInvalid, get_settings
    from service.supervise import run_demo

    env = stage_environment(real_provider)
    try:
        configured = get_settings()
    except SettingsInvalid as exc:
        typer.echo(f"error: setting {exc}", err=True)
        raise typer.Exit(1) from None
    settings = (
        configured if real_provider else configured.model_copy(update={"simulator_only": True})
    )
    if not real_provider and not configured.uses_simulator:
        typer.secho(
            "note: a provider is configured (OPENAI_API_KEY / OPENAI_BASE_URL), but the demo "
            "uses the built-in simulator and spends nothing; `tinystories demo "
            "--real-provider` uses your provider (and pays).",
            fg="yellow",
            err=True,
        )
    judge = "simulator-judge-1" if settings.uses_simulator else "gpt-4o-mini"
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
            env=env,
        )
        _stage("export", ["export", "--out", str(export_dir), "--job", str(job["id"])], env)
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
            env,
        )  # fmt: skip
        _stage(
            "sample",
            ["sample", "--model", str(model_dir), "--prompt", "Once upon a time", "--n", "2"],
            env,
        )
        _stage(
            "grade",
            [
                "grade", "--model", str(model_dir), "--judge", judge,
                "--data", str(export_dir), "--out", str(report_dir),
                "--prompts", str(grade_prompts), "--k", str(grade_k),
                # The model was trained at 128 tokens: prompt and completion fit in it.
                "--max-new-tokens", "64",
            ],
            env,
        )  # fmt: skip
        typer.secho(
            f"\ndemo finished: export {export_dir}, model {model_dir}, "
            f"report {report_dir / 'report.md'}",
            bold=True,
            err=True,
        )
        _next_steps(settings, real_provider)
    finally:
        if not settings.database_url:
            from service.pgserver import EmbeddedPostgres

            EmbeddedPostgres(settings.pg_dir).stop()


def _next_steps(settings: Settings, real_provider: bool) -> None:
    lines = [
        "next steps:",
        "  tinystories serve --with-worker    # API, dashboard and a worker, until Ctrl-C",
        f"  open http://{settings.host}:{settings.port}/admin   # admin token: "
        f"TINYSTORIES_ADMIN_TOKEN, or the file {settings.admin_token_path.resolve()}",
        "  tinystories jobs submit --n 1000 --budget-usd 1 --wait",
    ]
    if not real_provider:
        lines.append(
            "  a real run: export OPENAI_API_KEY=..., then `tinystories demo --real-provider` "
            "(or `serve` and `jobs submit --model gpt-4o-mini`): this spends money"
        )
    typer.echo("\n".join(lines), err=True)


def demo(
    n_stories: int = typer.Option(500, "--n", min=1, help="Stories in the demo job."),
    budget_usd: float = typer.Option(5.0, help="Budget of the demo job in USD."),
    train_seconds: float = typer.Option(120.0, help="CPU training time of the demo model."),
    grade_prompts: int = typer.Option(44, help="GPT-Eval prompts to grade (of the 44)."),
    grade_k: int = typer.Option(2, help="Completions per GPT-Eval prompt."),
    skip_train: bool = typer.Option(False, help="Stop after the export."),
    real_provider: bool = typer.Option(
        False,
        "--real-provider",
        help="Generate and judge with OPENAI_API_KEY / OPENAI_BASE_URL (spends money); "
        "without it the demo always uses the built-in simulator.",
    ),
    n_alias: int | None = typer.Option(None, "--n-stories", min=1, hidden=True),
) -> None:
    """The whole pipeline offline: service, 500 stories, export, train, sample, grade."""
    n_stories = n_alias or n_stories
    run_pipeline(
        n_stories=n_stories,
        budget_usd=budget_usd,
        train_seconds=train_seconds,
        grade_prompts=grade_prompts,
        grade_k=grade_k,
        skip_train=skip_train,
        real_provider=real_provider,
    )
