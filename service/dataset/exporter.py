"""Export stored stories to a dataset directory (DatasetDict, parquet, release files, card).

`run_export` is synchronous: it streams rows from Postgres through a server-side cursor into
`ExportWriter`, so memory stays bounded whatever the number of stories. The CLI calls it
directly; the API runs it in a thread (see service/api/exports.py).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from service.dataset.export_writer import EmptyExportError, ExportError, ExportResult, ExportWriter
from service.store import exports as exports_store
from service.store.exports import as_utc
from service.store.storable import has_nul, refuse_lone_surrogates

logger = logging.getLogger(__name__)


NAIVE_IS_UTC = "a time without a UTC offset is taken as UTC"


class ExportOptions(BaseModel):
    """What to export and how; the body of POST /v1/exports."""

    # A misspelt option (include_rejectd) is a 422, not an export with the default.
    model_config = ConfigDict(extra="forbid")

    jobs: list[uuid.UUID] | None = None
    models: list[str] | None = None
    since: datetime | None = Field(
        None, description=f"stories created at or after this time; {NAIVE_IS_UTC}"
    )
    until: datetime | None = Field(
        None, description=f"stories created before this time (after since); {NAIVE_IS_UTC}"
    )
    include_duplicates: bool = False
    include_rejected: bool = False
    # instruct: only stories with TinyStories-Instruct metadata (summary, words or features)
    format: Literal["plain", "instruct"] = "plain"
    # Train records per TinyStories_all_data/dataNN.json file (data00.json is validation).
    records_per_shard: int = Field(100_000, ge=1)
    validation_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    seed: int = 0
    decontaminate: bool = True

    @field_validator("*", mode="before")
    @classmethod
    def _valid_unicode(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_lone_surrogates(value, info.field_name or "")

    @field_validator("models")
    @classmethod
    def _plain_names(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(has_nul(m) or not m.strip() for m in v):
            raise ValueError("model names must be non-empty text without NUL characters")
        return v

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        # Naive and aware times cannot be compared, and Postgres would read a naive one in
        # its session time zone: one rule everywhere.
        v = as_utc(v)
        since = info.data.get("since")
        if info.field_name == "until" and v is not None and since is not None and v <= since:
            raise ValueError("until must be after since")
        return v

    def filters(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def check_pending(database_url: str) -> int:
    """Check the stories stored in the last moments that the workers' indexer has not reached,
    so the export's duplicate filter and counts cover every story. Returns how many."""
    import asyncio

    from service.dataset.dedup import run_dedup_pass
    from service.db import make_engine, make_sessionmaker

    async def run() -> int:
        engine = make_engine(database_url, pool_size=1)
        try:
            return (await run_dedup_pass(make_sessionmaker(engine))).checked
        finally:
            await engine.dispose()

    return asyncio.run(run())


def rejected_stories(conn: Any, opts: dict[str, Any]) -> tuple[int, Counter[str]]:
    """How many stories under these filters failed their checks, and how often each check
    failed. Runs only when an export comes out empty, so it may read every row."""
    rejected, reasons = 0, Counter[str]()
    for row in exports_store.stream_rows(conn, {**opts, "include_rejected": True}):
        if not row["accepted"]:
            rejected += 1
            reasons.update(row["rejections"])
    return rejected, reasons


def run_export(
    database_url: str,
    out_dir: str | Path,
    options: ExportOptions,
    *,
    export_id: uuid.UUID | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    progress_every: int = 1_000,
    worker: str = "auto",
) -> ExportResult:
    """Write the export directory; with `export_id`, progress and outcome go to its row.

    `worker` is Settings.export_worker: auto, on or off."""
    import psycopg

    from service.dataset.decontam import Decontaminator

    opts = options.filters()
    check_pending(database_url)
    url = exports_store.libpq_url(database_url)
    with psycopg.connect(url, autocommit=True) as status_conn, psycopg.connect(url) as conn:
        # One snapshot for the count, the facts and the rows.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        total = exports_store.count_rows(conn, opts)
        facts = exports_store.dataset_facts(conn, opts)

        def progress(done: int, total_: int | None) -> None:
            if export_id is not None:
                exports_store.set_progress(status_conn, export_id, done, total_)
            if on_progress is not None:
                on_progress(done, total_)

        writer = ExportWriter(
            out_dir,
            validation_fraction=options.validation_fraction,
            seed=options.seed,
            fmt=options.format,
            json_records_per_file=options.records_per_shard,
            decontaminator=Decontaminator() if options.decontaminate else None,
            on_progress=progress,
            progress_every=progress_every,
            with_checks=options.include_rejected,
            worker={"on": True, "off": False}.get(worker),
        )
        try:
            try:
                result = writer.write(
                    exports_store.stream_rows(conn, opts),
                    total=total,
                    metadata={**facts, "name": "TinyStories-style synthetic stories"},
                )
            except EmptyExportError as exc:
                if options.include_rejected:
                    raise
                # Too few accepted stories: name the rejected ones the filters left out.
                rejected, reasons = rejected_stories(conn, opts)
                raise ExportError(exc.describe(rejected, reasons)) from None
        except Exception as exc:
            if export_id is not None:
                exports_store.finish_export(status_conn, export_id, status="failed", error=str(exc))
            raise
        if export_id is not None:
            exports_store.finish_export(
                status_conn,
                export_id,
                status="completed",
                path=str(result.out_dir),
                counts=result.counts,
                fingerprint=result.fingerprint,
            )
    logger.info(
        "export done dir=%s stories=%d fingerprint=%s",
        result.out_dir,
        result.counts["total"],
        result.fingerprint[:12],
    )
    return result
