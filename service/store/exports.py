"""Export SQL: the filtered story stream (server-side cursor), export rows and their progress.

The row stream uses a plain psycopg connection with a named (server-side) cursor: the export
writer is synchronous and runs in a thread, and the named cursor keeps memory bounded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

EXPORT_COLUMNS = (
    "id, text, summary, instruction, verb, noun, adjective, features, model, provider, "
    "source, cost_usd, dedup_cluster_id, text_hash, prompt, accepted, rejection_reasons, "
    "dedup_status, "
    # The text hash of a duplicate's cluster root (by primary key; NULL for other stories): the
    # export splits a cluster by it, so its members stay on one side.
    "(SELECT r.text_hash FROM stories r WHERE r.id = stories.dedup_cluster_id) AS cluster_hash"
)


def libpq_url(url: str) -> str:
    """A SQLAlchemy psycopg URL as a libpq connection string."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def as_utc(value: datetime | None) -> datetime | None:
    """An aware time as is; a naive one taken as UTC (the export filters' rule)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _time(value: str | datetime) -> str | datetime:
    # Stored options hold ISO text; a naive one must not be read in the session's time zone.
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return as_utc(value) or value


def story_filter(options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """WHERE clause (psycopg %(name)s parameters) of the export filters."""
    where = ["true"]
    params: dict[str, Any] = {}
    if options.get("jobs"):
        where.append("job_id = ANY(%(jobs)s::uuid[])")
        params["jobs"] = [str(j) for j in options["jobs"]]
    if options.get("models"):
        where.append("model = ANY(%(models)s)")
        params["models"] = list(options["models"])
    if options.get("since"):
        where.append("created_at >= %(since)s")
        params["since"] = _time(options["since"])
    if options.get("until"):
        where.append("created_at < %(until)s")
        params["until"] = _time(options["until"])
    if not options.get("include_duplicates"):
        where.append("coalesce(dedup_status, 'unique') = 'unique'")
    if not options.get("include_rejected"):
        where.append("accepted")
    return " AND ".join(where), params


def count_rows(conn: Any, options: dict[str, Any]) -> int:
    where, params = story_filter(options)
    return conn.execute(f"SELECT count(*) FROM stories WHERE {where}", params).fetchone()[0]


def stream_rows(conn: Any, options: dict[str, Any], *, itersize: int = 2_000) -> Iterator[dict]:
    """Rows in id order through a server-side cursor (conn must be in a transaction)."""
    where, params = story_filter(options)
    with conn.cursor(name="export_rows") as cur:
        cur.itersize = itersize
        cur.execute(f"SELECT {EXPORT_COLUMNS} FROM stories WHERE {where} ORDER BY id", params)
        names = [d.name for d in cur.description]
        for values in cur:
            row = dict(zip(names, values, strict=True))
            yield {
                "id": str(row["id"]),
                "text": row["text"],
                "summary": row["summary"],
                "instruction": row["instruction"],
                "verb": row["verb"],
                "noun": row["noun"],
                "adjective": row["adjective"],
                "features": row["features"] or [],
                "model": row["model"],
                "provider": row["provider"],
                "source": row["source"],
                "cost_usd": float(row["cost_usd"] or 0),
                "dedup_cluster": row["dedup_cluster_id"],
                "dedup_status": row["dedup_status"],
                "cluster_hash": row["cluster_hash"],
                "story_hash": row["text_hash"],
                "prompt": row["prompt"],
                "accepted": row["accepted"],
                "rejections": row["rejection_reasons"] or [],
            }


def dataset_facts(conn: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Dedup parameters and rates, template versions and jobs of the exported stories."""
    where, params = story_filter({**options, "include_duplicates": True})
    dedup = conn.execute(
        "SELECT count(*) FILTER (WHERE dedup_status IS NOT NULL), "
        "count(*) FILTER (WHERE dedup_status = 'exact_duplicate'), "
        f"count(*) FILTER (WHERE dedup_status = 'near_duplicate') FROM stories WHERE {where}",
        params,
    ).fetchone()
    stored = conn.execute("SELECT params FROM dedup_params WHERE id = 1").fetchone()
    jobs = conn.execute(
        "SELECT j.id::text, j.template_version FROM jobs j WHERE j.id IN "
        f"(SELECT DISTINCT job_id FROM stories WHERE {where} AND job_id IS NOT NULL) "
        "ORDER BY j.created_at",
        params,
    ).fetchall()
    checked, exact, near = dedup
    return {
        "dedup": {
            "params": stored[0] if stored else None,
            "checked": checked,
            "exact_duplicates": exact,
            "near_duplicates": near,
            "duplicate_rate": round((exact + near) / checked, 6) if checked else 0.0,
            "duplicates_included": bool(options.get("include_duplicates")),
        },
        "template_versions": sorted({v for _, v in jobs}),
        "provenance": {
            "jobs": [j for j, _ in jobs],
            "filters": options,
        },
    }


def set_progress(conn: Any, export_id: uuid.UUID, done: int, total: int | None) -> None:
    conn.execute(
        "UPDATE exports SET rows_done = %s, rows_total = %s, progress = %s, status = 'running' "
        "WHERE id = %s",
        (done, total, min(done / total, 1.0) if total else 0.0, export_id),
    )


def finish_export(
    conn: Any,
    export_id: uuid.UUID,
    *,
    status: str,
    path: str | None = None,
    counts: dict[str, Any] | None = None,
    fingerprint: str | None = None,
    error: str | None = None,
) -> None:
    conn.execute(
        "UPDATE exports SET status = %s, path = %s, counts = %s::jsonb, fingerprint = %s, "
        "error = %s, finished_at = now(), progress = CASE WHEN %s = 'completed' THEN 1 "
        "ELSE progress END WHERE id = %s",
        (
            status,
            path,
            json.dumps(counts) if counts is not None else None,
            fingerprint,
            error,
            status,
            export_id,
        ),
    )


async def unknown_jobs(*, session: AsyncSession, job_ids: Sequence[uuid.UUID]) -> list[str]:
    """The ids of `job_ids` that name no job."""
    if not job_ids:
        return []
    rows = await session.execute(
        text("SELECT id FROM jobs WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": list(job_ids)}
    )
    found = {r[0] for r in rows}
    return [str(j) for j in job_ids if j not in found]


async def create_export(*, session: AsyncSession, options: dict[str, Any]) -> uuid.UUID:
    export_id = uuid.uuid4()
    await session.execute(
        text("INSERT INTO exports (id, options) VALUES (:id, CAST(:o AS jsonb))"),
        {"id": export_id, "o": json.dumps(options)},
    )
    return export_id


async def get_export(*, session: AsyncSession, export_id: uuid.UUID) -> dict[str, Any] | None:
    row = (
        await session.execute(
            text(
                "SELECT id, status, options, rows_done, rows_total, progress, path, counts, "
                "fingerprint, error, created_at, finished_at FROM exports WHERE id = :id"
            ),
            {"id": export_id},
        )
    ).first()
    return dict(row._mapping) if row is not None else None


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
