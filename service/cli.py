"""Command-line commands of the service: serve, worker, jobs, db, demo."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from service.cli_common import database_url, fail, load_settings, usage_error

jobs_app = typer.Typer(
    help="Submit and manage generation jobs (through the REST API).", no_args_is_help=True
)
db_app = typer.Typer(help="Database: migrations and the embedded server.", no_args_is_help=True)


def _logging() -> None:
    from service.logformat import configure_from_env

    try:
        configure_from_env()
    except ValueError as exc:
        fail(str(exc))


def serve(
    host: str | None = typer.Option(None, help="Address to bind (TINYSTORIES_HOST)."),
    port: int | None = typer.Option(None, min=1, max=65535, help="Port (TINYSTORIES_PORT)."),
    with_worker: bool = typer.Option(False, "--with-worker", help="Also run one worker process."),
    concurrency: int | None = typer.Option(None, help="Worker concurrency with --with-worker."),
) -> None:
    """Run the REST API (and optionally a worker in the same process group)."""
    _logging()
    from service.supervise import ListenError, listen, serve_forever

    settings = load_settings(host=host, port=port)
    try:  # a taken port is one line, before the database starts or anything logs
        listener = listen(settings.host, settings.port)
    except ListenError as exc:
        fail(str(exc))
    database_url(settings)  # reachable and migrated, or one error line
    serve_forever(settings, with_worker=with_worker, concurrency=concurrency, listener=listener)


def worker(
    concurrency: int | None = typer.Option(
        None, min=1, max=4096, help="Tasks in flight (TINYSTORIES_WORKER_CONCURRENCY)."
    ),
    exit_when_idle: bool = typer.Option(False, help="Exit once no task is left to claim."),
) -> None:
    """Run an asyncio worker that claims tasks and writes stories until SIGTERM."""
    _logging()
    from service.work.provider import run_event_loop
    from service.work.wiring import run_worker, worker_config

    settings = load_settings(worker_concurrency=concurrency)
    database_url(settings)  # reachable and migrated, or one error line
    config = worker_config(settings, idle_exit=exit_when_idle)
    stats = run_event_loop(run_worker(settings, config=config))
    typer.echo(
        f"worker done: stories={stats.stories} failed={stats.failed} released={stats.released}"
    )


def _client() -> Any:
    from service.api_client import ApiClient, ApiError

    try:
        return ApiClient.from_settings(load_settings())
    except ApiError as exc:
        fail(str(exc))


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from service.api_client import ApiError

    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        fail(str(exc))


def _finite(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        usage_error(f"{name} must be a finite number, got {value}")


@jobs_app.command("submit")
def jobs_submit(
    n_stories: int | None = typer.Option(None, "--n", min=1, help="Stories to make."),
    budget_usd: float | None = typer.Option(None, "--budget-usd", help="Spending cap in USD."),
    model: list[str] = typer.Option([], help="Model, or MODEL=WEIGHT repeated for a mix."),
    instruct: bool = typer.Option(False, help="Also write summaries (TinyStories-Instruct)."),
    summary_model: str | None = typer.Option(None, help="Model of the summaries."),
    seed: int = typer.Option(0, help="Recipe seed."),
    priority: int = typer.Option(0, help="Higher runs first."),
    wait: bool = typer.Option(False, help="Show progress until the job ends."),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", min=16, help="Completion token cap per story request."
    ),
    price_input: float | None = typer.Option(
        None, "--price-input", min=0, help="USD per 1M prompt tokens of its models (0: local)."
    ),
    price_output: float | None = typer.Option(
        None, "--price-output", min=0, help="USD per 1M completion tokens (0: local)."
    ),
    mode: str = typer.Option(
        "online",
        help="online, batch (the provider's Batch API: half price, within 24 h) or auto "
        "(batch when the deadline allows and it saves at least "
        "TINYSTORIES_AUTO_BATCH_MIN_SAVING_USD, $1 by default).",
    ),
    deadline_hours: float | None = typer.Option(
        None, "--deadline-hours", min=0.01, help="When the stories are needed (auto mode)."
    ),
    vocab: Path | None = typer.Option(
        None,
        "--vocab",
        help="Your own vocabulary (txt/tsv, yaml or json, as `vocab stats --file` reads): "
        "the job's recipes are drawn from it and its stories checked against it.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the job as JSON."),
    # Spellings of earlier releases, still accepted.
    n_alias: int | None = typer.Option(None, "--n-stories", min=1, hidden=True),
    budget_alias: float | None = typer.Option(None, "--budget", hidden=True),
) -> None:
    """Queue a generation job."""
    n_stories = n_stories or n_alias
    budget_usd = budget_usd if budget_usd is not None else budget_alias
    if n_stories is None:
        usage_error("missing option --n (stories to make)")
    if budget_usd is None:
        usage_error("missing option --budget-usd (spending cap in USD)")
    for name, value in (
        ("--budget-usd", budget_usd),
        ("--price-input", price_input),
        ("--price-output", price_output),
        ("--deadline-hours", deadline_hours),
    ):
        _finite(name, value)
    body: dict[str, Any] = {
        "n_stories": n_stories,
        "budget_usd": budget_usd,
        "instruct": instruct,
        "seed": seed,
        "priority": priority,
    }
    if summary_model:
        body["summary_model"] = summary_model
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if mode not in ("online", "batch", "auto"):
        usage_error(f"--mode {mode!r}: choose online, batch or auto")
    body["mode"] = mode
    if deadline_hours is not None:
        body["deadline_hours"] = deadline_hours
    if (price_input is None) != (price_output is None):
        usage_error("give --price-input and --price-output together (USD per 1M tokens)")
    if price_input is not None:
        body["price"] = {"input": price_input, "output": price_output}
    if vocab is not None:
        body["vocabulary"] = vocabulary_body(vocab)
    if len(model) == 1 and "=" not in model[0]:
        body["model"] = model[0]
    elif model:
        mix = {}
        for item in model:
            name, _, weight = item.partition("=")
            try:
                mix[name] = float(weight or 1)
            except ValueError:
                usage_error(f"--model {item!r}: weight must be a number")
        body["models"] = mix
    client = _client()
    job = _call(client.submit, body)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
    else:
        typer.echo(
            f"job {job['id']} {job['status']} n_stories={job['n_stories']} "
            f"provider={job['provider']} mode={job.get('mode', 'online')}"
            + (f" ({job['mode_reason']})" if job.get("mode_reason") else "")
        )
        if vocab is not None:
            typer.echo(vocabulary_line(job))
    if wait:
        from service.supervise import follow_job

        follow_job(client, job["id"])


def vocabulary_body(path: Path) -> dict[str, Any]:
    """A vocabulary file as POST /v1/jobs takes it; a file a job cannot use is one line,
    exit 2, before the API is called."""
    from service.api.schemas import MAX_VOCABULARY_WORDS
    from vocab import FEATURES, VocabError, load_vocabulary

    try:
        vocabulary = load_vocabulary(path)
    except VocabError as exc:
        usage_error(str(exc))
    if vocabulary.features != FEATURES:
        usage_error(
            f"{path}: jobs use the six standard features (set their probabilities with "
            "feature_probs); remove `features` from the file, or use it with "
            "`tinystories generate --vocab`"
        )
    words = vocabulary.words_by_role()
    for role, listed in words.items():
        if len(listed) > MAX_VOCABULARY_WORDS:
            usage_error(
                f"{path}: {len(listed)} {role}s, a job takes at most {MAX_VOCABULARY_WORDS}"
            )
    return {"name": vocabulary.name[:100], "words": words}


def vocabulary_line(job: dict[str, Any]) -> str:
    """`vocabulary NAME: 3 nouns, 3 verbs, 3 adjectives, sha256 ...`."""
    v = job["vocabulary"]
    return (
        f"vocabulary {v['name']}: {v['noun']} nouns, {v['verb']} verbs, "
        f"{v['adjective']} adjectives, sha256 {v['sha256']}"
    )


@jobs_app.command("list")
def jobs_list(
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON answer."),
) -> None:
    """Jobs, newest first."""
    data = _call(_client().list)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for job in data["items"]:
        typer.echo(
            f"{job['id']}  {job['status']:<16} {job['completed']:>7}/{job['n_stories']:<7} "
            f"rejected={job['rejected']} failed={job['failed']} "
            f"cost=${job['cost_usd']:.4f}"
        )
    if data.get("simulator"):
        typer.echo("(provider: built-in simulator)")


@jobs_app.command("show")
def jobs_show(
    job_id: str = typer.Argument(..., help="A job id or any unique prefix of one."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON answer."),
) -> None:
    """One job: progress, cost, rates, rejections."""
    job = _call(_client().show, job_id)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    done = job["completed"] + job["rejected"] + job["failed"]
    typer.echo(f"job {job['id']} {job['status']} provider={job['provider']}")
    typer.echo(
        f"  stories {job['completed']} accepted, {job['rejected']} rejected, "
        f"{job['failed']} failed ({done}/{job['n_stories']})"
    )
    typer.echo(f"  cost ${job['cost_usd']:.4f} of ${job['budget_usd']:.4f}")
    if job.get("vocabulary"):
        typer.echo("  " + vocabulary_line(job))
    if job.get("mode") == "batch" and job.get("batches"):
        b = job["batches"]
        typer.echo(
            f"  batches {b['batches']} ({b['preparing']} preparing, {b['in_progress']} at the "
            f"provider, {b['completed']} completed, {b['failed']} failed); saved "
            f"${b['saved_usd']:.4f} vs online"
            + (f" ({job['mode_reason']})" if job.get("mode_reason") else "")
        )
    reasons = job.get("rejections_by_reason") or {}
    if reasons:
        typer.echo("  rejections " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())))
    from service.api.diversity import summary_lines

    typer.echo("\n".join(summary_lines(_call(_client().diversity, job["id"]))))


def _action(action: str) -> Any:
    def command(job_id: str) -> None:
        job = _call(_client().action, job_id, action)
        typer.echo(f"job {job['id']} {job['status']}")

    command.__doc__ = f"{action.capitalize()} a job."
    return command


for _name in ("pause", "resume", "cancel"):
    jobs_app.command(_name)(_action(_name))


@jobs_app.command("budget")
def jobs_budget(
    job_id: str = typer.Argument(..., help="A job id or any unique prefix of one."),
    budget_usd: float = typer.Argument(..., help="New budget in USD (at least what it spent)."),
    resume: bool = typer.Option(False, "--resume", help="Also resume a paused or exhausted job."),
) -> None:
    """Change a job's budget; with --resume, go on with a job whose budget ran out."""
    _finite("BUDGET_USD", budget_usd)
    job = _call(_client().set_budget, job_id, budget_usd)
    if resume and job["status"] in ("paused", "budget_exhausted"):
        job = _call(_client().action, job_id, "resume")
    typer.echo(f"job {job['id']} {job['status']} budget=${job['budget_usd']:.4f}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations (starting the embedded server if DATABASE_URL is unset)."""
    _logging()
    from service.migrate import upgrade

    settings = load_settings()
    url = database_url(settings, migrate=False)
    try:
        upgrade(url)
    except Exception as exc:
        fail(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    typer.echo("database at head")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded Postgres server of TINYSTORIES_HOME."""
    from service.pgserver import EmbeddedPostgres

    settings = load_settings()
    if settings.database_url:
        fail("DATABASE_URL is set: that server is not managed here")
    if not settings.pg_dir.is_dir():  # a mistyped home: nothing to stop, nothing to create
        typer.echo(f"no embedded database under TINYSTORIES_HOME={settings.home}")
        return
    stopped = EmbeddedPostgres(settings.pg_dir).stop()
    typer.echo("embedded postgres stopped" if stopped else "embedded postgres was not running")


def demo(
    n_stories: int = typer.Option(500, help="Stories in the demo job."),
    budget_usd: float = typer.Option(5.0, help="Budget of the demo job."),
) -> None:
    """Start everything (database, simulator, API, worker), make a job over REST, stop all."""
    _logging()
    from service.supervise import run_demo

    run_demo(load_settings(), n_stories=n_stories, budget_usd=budget_usd)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `tinystories` application."""
    app.command()(serve)
    app.command()(worker)
    app.command("demo-service")(demo)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(db_app, name="db")
    from service.dataset import cli as dataset_cli

    dataset_cli.register(app)
