"""Dataset commands: `tinystories import`, `tinystories dedup`, `tinystories export`."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

# fail: a runtime failure (bad input file, failed export), exit 1; usage_error: exit 2.
from service.cli_common import fail, load_settings, usage_error


def _database_url() -> str:
    from service.cli_common import database_url

    return database_url(load_settings())  # migrates a fresh TINYSTORIES_HOME


class _Bar:
    """A bar on a terminal, a line every few seconds elsewhere (generator.progress), on
    stderr: stdout keeps just the summary line."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.progress: Any = None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def add_task(self, description: str, total: int | None = None) -> int:
        from generator.progress import Progress

        self.progress = Progress(description, total=total, unit=self.unit).__enter__()
        return 0

    def update(self, task: int, completed: int, total: int | None = None) -> None:
        self.progress.update(completed, total=total)


def _progress(unit: str = "stories") -> _Bar:
    return _Bar(unit)


async def _with_sessions(url: str, fn: Any) -> Any:
    from service.db import make_engine, make_sessionmaker

    engine = make_engine(url, pool_size=2)
    try:
        return await fn(make_sessionmaker(engine))
    finally:
        await engine.dispose()


def import_(
    paths: list[Path] = typer.Argument(
        ...,
        help="TinyStories release files (.txt, .json, .jsonl) or an export's .parquet shards, "
        "imported in the order given.",
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="text | instruct | json | jsonl | parquet (detected when omitted)."
    ),
    batch_size: int = typer.Option(2_000, min=1, help="Stories per transaction."),
    max_chars: int = typer.Option(
        16_384,  # importer.DEFAULT_MAX_CHARS: 4x the longest of 1,200 real stories
        min=1,
        help="Skip (and count) stories longer than this many characters.",
    ),
) -> None:
    """Load TinyStories release files into the store (idempotent, resumable)."""
    from service.dataset.import_formats import (
        FORMATS,
        ImportFormatError,
        detect_format,
        refuse_unreadable,
    )
    from service.dataset.importer import ImportSummary, import_file
    from service.dataset.minhash import MinHashParams
    from service.store.signature_cache import SignatureCache

    if fmt is not None and fmt not in FORMATS:
        usage_error(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    formats = []
    for path in paths:  # every file is checked before the database starts
        if path.is_dir():
            usage_error(f"{path} is a directory: name its files (e.g. {path}/*.json)")
        if not path.is_file():
            usage_error(f"{path}: no such file")
        try:  # a file that is not stories is refused at once
            refuse_unreadable(path, fmt)
            formats.append(fmt or detect_format(path))
        except ImportFormatError as exc:
            fail(f"{exc}; nothing was stored")
    url = _database_url()
    # One cache for every file: the roots met in one shard are the candidates of the next.
    cache = SignatureCache(MinHashParams().num_perm)
    for path, file_fmt in zip(paths, formats, strict=True):
        error = None
        with _progress("bytes") as bar:
            task = bar.add_task(f"import {path.name}", total=path.stat().st_size)

            def progress(done: int, total: int, task: int = task, bar: _Bar = bar) -> None:
                bar.update(task, completed=done, total=total)

            def run(sm: Any, path: Path = path, file_fmt: str = file_fmt) -> Any:
                return import_file(
                    sm,
                    path,
                    fmt=file_fmt,  # type: ignore[arg-type]
                    batch_size=batch_size,
                    max_chars=max_chars,
                    on_progress=progress,
                    cache=cache,
                )

            try:
                summary: ImportSummary = asyncio.run(_with_sessions(url, run))
            except ImportFormatError as exc:
                error = str(exc)
        if error:  # after the progress bar is gone: the error is the only line
            fail(error)
        _report(path, summary)


def _report(path: Path, summary: Any) -> None:
    """The lines of one imported file: warnings on stderr, then what was imported."""
    if summary.already_done:
        typer.echo(f"{path}: already imported, nothing to do")
        return
    if summary.unknown_fields:
        typer.echo(f"warning: {path}: {summary.unknown_fields}", err=True)
    for reason, records in summary.rejected.items():
        shown = ", ".join(map(str, records))
        typer.echo(f"warning: {path}: skipped stories {reason} (records {shown}...)", err=True)
    typer.echo(
        f"imported {summary.inserted} stories from {path} (format {summary.format}, "
        f"duplicates {summary.duplicates}, skipped {summary.rejected_count}, "
        f"resumed at record {summary.resumed_at})"
    )


def dedup(
    rebuild: bool = typer.Option(
        False, help="Forget the index and redo every story (after a parameter change)."
    ),
    batch_size: int = typer.Option(2_000, min=1, help="Stories per transaction."),
) -> None:
    """Run the near-duplicate pass over every stored story that has no dedup status."""
    from service.dataset.dedup import run_dedup_pass
    from service.store.dedup import DedupParamsMismatch

    url = _database_url()
    error = None
    with _progress() as bar:
        task = bar.add_task("dedup", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            s = asyncio.run(
                _with_sessions(
                    url,
                    lambda sm: run_dedup_pass(
                        sm, batch_size=batch_size, rebuild=rebuild, on_progress=progress
                    ),
                )
            )
        except DedupParamsMismatch as exc:
            error = str(exc)
    if error:
        fail(error)
    typer.echo(
        f"dedup: checked={s.checked} unique={s.unique} near_duplicates={s.near_duplicate} "
        f"exact_duplicates={s.exact_duplicate} duplicate_rate={s.duplicate_rate:.4f}"
    )


def export(
    out: Path = typer.Option(..., "--out", help="Directory to write (must not exist or be empty)."),
    job: list[str] = typer.Option([], "--job", help="Only these jobs (repeat)."),
    model: list[str] = typer.Option([], "--model", help="Only these models (repeat)."),
    since: datetime | None = typer.Option(None, help="Stories created at or after (ISO time)."),
    until: datetime | None = typer.Option(None, help="Stories created before (ISO time)."),
    include_duplicates: bool = typer.Option(False, help="Keep near and exact duplicates."),
    include_rejected: bool = typer.Option(False, help="Keep stories that failed the checks."),
    fmt: str = typer.Option(
        "plain",
        "--format",
        help="plain: every story | instruct: only stories with Instruct metadata "
        "(summary, words or features).",
    ),
    records_per_shard: int = typer.Option(
        100_000,
        min=1,
        help="Train records per TinyStories_all_data/dataNN.json (data00.json is validation).",
    ),
    validation_fraction: float = typer.Option(0.05, help="Share of stories in validation, (0, 1)."),
    seed: int = typer.Option(0, help="Split seed."),
    decontaminate: bool = typer.Option(True, help="Drop stories overlapping evaluation prompts."),
) -> None:
    """Export stored stories as a Hugging Face dataset directory + TinyStories release files."""
    from pydantic import ValidationError

    from service.dataset.export_writer import ExportError
    from service.dataset.exporter import ExportOptions, run_export

    problem = _unwritable(out)  # one line before the database starts; nothing created
    if problem:
        fail(f"cannot write the export to {out}: {problem}")
    from service.cli_common import database_url

    settings = load_settings()
    url = database_url(settings)  # migrates a fresh TINYSTORIES_HOME
    jobs = [_resolve_job(url, j) for j in job] or None
    try:
        options = ExportOptions(
            jobs=jobs,
            models=model or None,
            since=since,
            until=until,
            include_duplicates=include_duplicates,
            include_rejected=include_rejected,
            format=fmt,
            records_per_shard=records_per_shard,
            validation_fraction=validation_fraction,
            seed=seed,
            decontaminate=decontaminate,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        usage_error(f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
    if jobs:
        missing = asyncio.run(_with_sessions(url, lambda sm: _unknown_jobs(sm, jobs)))
        if missing:
            usage_error(f"jobs: unknown job(s): {', '.join(missing)}")
    error = None
    with _progress() as bar:
        task = bar.add_task("export", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = run_export(
                url, out, options, on_progress=progress, worker=settings.export_worker
            )
        except ExportError as exc:
            error = str(exc)
        except OSError as exc:  # the disk filled up, a directory vanished
            error = f"cannot write the export to {out}: {exc.strerror or exc}"
    if error:
        fail(error)
    c = result.counts
    held = c.get("excluded_separator")
    typer.echo(
        f"exported {c['total']} stories to {out} (train {c['train']}, validation "
        f"{c['validation']}, excluded as contaminated {c['excluded_contaminated']}"
        f"{f', left out for holding <|endoftext|> {held}' if held else ''}) "
        f"fingerprint {result.fingerprint[:12]}"
    )


def _unwritable(out: Path) -> str | None:
    """Why `out` cannot be created or written, judged from its nearest existing ancestor."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


async def _unknown_jobs(sessionmaker: Any, jobs: list[uuid.UUID]) -> list[str]:
    from service.store.exports import unknown_jobs

    async with sessionmaker() as session:
        return await unknown_jobs(session=session, job_ids=jobs)


def _resolve_job(url: str, job_id: str) -> uuid.UUID:
    """A job id, or the one job whose id starts with this prefix (what `jobs list` shows)."""
    try:
        return uuid.UUID(job_id)
    except ValueError:
        pass
    if not job_id or any(c not in "0123456789abcdefABCDEF-" for c in job_id):
        usage_error(f"--job {job_id!r}: not a job id or a prefix of one")

    async def find(sessionmaker: Any) -> list[uuid.UUID]:
        from service.store.jobs import list_jobs

        async with sessionmaker() as session:
            return [j.id for j in await list_jobs(session=session, limit=2, id_prefix=job_id)]

    found = asyncio.run(_with_sessions(url, find))
    if len(found) != 1:
        problem = "no job starts with it" if not found else "several jobs start with it"
        usage_error(f"--job {job_id!r}: {problem}")
    return found[0]


def register(app: typer.Typer) -> None:
    """Add the dataset commands to the `tinystories` application."""
    app.command("import")(import_)
    app.command()(dedup)
    app.command()(export)
