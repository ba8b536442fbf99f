"""/v1/exports (create, progress, download) and /v1/stats/duplicates.

Exports run as background asyncio tasks of the API process, the writer itself in a thread:
exports are rare, user-initiated and need no provider budget, so a second queue kind for
workers would buy nothing. The price: an export whose API process stops is not resumed (its
row keeps its last progress); request it again, the result is the same directory.
"""

from __future__ import annotations

import asyncio
import logging
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.deps import not_found, require_token, session_dep
from service.api.idempotency import IDEMPOTENCY_HEADER, earlier_result, record_result, request_hash
from service.dataset.exporter import ExportOptions, run_export
from service.store import dedup as dedup_store
from service.store import exports as exports_store

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["exports"], dependencies=[Depends(require_token)])


def exports_dir(request: Request) -> Path:
    return Path(request.app.state.settings.exports_root)


def point_latest(root: Path, export_id: uuid.UUID) -> None:
    """`root/latest` -> the newest finished export, swapped atomically (readers never see a
    missing link): the stable path the trainer and grader jobs read."""
    tmp = root / f".latest-{export_id}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(str(export_id), target_is_directory=True)
    tmp.replace(root / "latest")


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "options": row["options"],
        "rows_done": row["rows_done"],
        "rows_total": row["rows_total"],
        "progress": row["progress"],
        "counts": row["counts"],
        "fingerprint": row["fingerprint"],
        "error": row["error"],
        "created_at": exports_store.iso(row["created_at"]),
        "finished_at": exports_store.iso(row["finished_at"]),
    }


async def _run_in_background(
    request: Request, export_id: uuid.UUID, options: ExportOptions
) -> None:
    url = request.app.state.engine.url.render_as_string(hide_password=False)
    root = exports_dir(request)
    try:
        out = root / str(export_id)
        worker = request.app.state.settings.export_worker
        await asyncio.to_thread(run_export, url, out, options, export_id=export_id, worker=worker)
    except Exception as exc:
        logger.warning("export failed id=%s: %s", export_id, exc)
        # Whatever failed (a filter the database refuses, a full disk), the export ends
        # `failed` with the reason instead of staying `queued`.
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        try:
            await asyncio.to_thread(_mark_failed, url, export_id, reason[:1000])
        except Exception:
            logger.exception("could not mark export %s failed", export_id)
        return
    try:
        point_latest(root, export_id)
    except OSError as exc:
        logger.warning("export %s: cannot point %s/latest at it: %s", export_id, root, exc)


def _mark_failed(url: str, export_id: uuid.UUID, reason: str) -> None:
    import psycopg

    with psycopg.connect(exports_store.libpq_url(url), autocommit=True) as conn:
        exports_store.finish_export(conn, export_id, status="failed", error=reason)


EXPORTS_ROUTE = "POST /v1/exports"


@router.post("/exports", status_code=202)
async def create_export(
    body: ExportOptions,
    request: Request,
    session: AsyncSession = session_dep,
    idempotency_key: str | None = IDEMPOTENCY_HEADER,
) -> dict[str, Any]:
    """Start an export in the background; poll GET /v1/exports/{id}."""
    fingerprint = request_hash(body)
    earlier = await earlier_result(session, EXPORTS_ROUTE, idempotency_key, fingerprint)
    if earlier is not None:
        row = await _get(session, uuid.UUID(earlier.resource_id))
        return {"id": earlier.resource_id, "status": row["status"]}
    missing = await exports_store.unknown_jobs(session=session, job_ids=body.jobs or [])
    if missing:
        raise HTTPException(
            status_code=422,
            detail={"field": "jobs", "message": f"unknown job(s): {', '.join(missing)}"},
        )
    export_id = await exports_store.create_export(session=session, options=body.filters())
    winner = await record_result(
        session, EXPORTS_ROUTE, idempotency_key, fingerprint, str(export_id), 202
    )
    if winner is not None:  # a concurrent retry started it first; ours was rolled back
        row = await _get(session, uuid.UUID(winner.resource_id))
        return {"id": winner.resource_id, "status": row["status"]}
    await session.commit()  # the background thread updates this row
    tasks: set[asyncio.Task[None]] | None = getattr(request.app.state, "export_tasks", None)
    if tasks is None:
        tasks = request.app.state.export_tasks = set()
    task = asyncio.create_task(_run_in_background(request, export_id, body))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return {"id": str(export_id), "status": "queued"}


async def _get(session: AsyncSession, export_id: uuid.UUID) -> dict[str, Any]:
    row = await exports_store.get_export(session=session, export_id=export_id)
    if row is None:
        raise not_found("export_id", f"export {export_id} not found")
    return row


@router.get("/exports/{export_id}")
async def get_export(export_id: uuid.UUID, session: AsyncSession = session_dep) -> dict[str, Any]:
    """Status and progress of an export."""
    return _public(await _get(session, export_id))


class _Chunks:
    """Write-only file object collecting what tarfile writes, drained between files."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def drain(self) -> Iterator[bytes]:
        parts, self.parts = self.parts, []
        yield from parts


def tar_stream(root: Path, name: str) -> Iterator[bytes]:
    """A tar.gz of `root`, produced on the fly while it is sent."""
    sink = _Chunks()
    with tarfile.open(fileobj=sink, mode="w|gz") as tar:  # type: ignore[call-overload]
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=f"{name}/{path.relative_to(root)}", recursive=False)
            yield from sink.drain()
    yield from sink.drain()


def files_present(root: Path) -> bool:
    """True when the export directory still holds something to send."""
    try:
        return root.is_dir() and any(root.iterdir())
    except OSError:  # unreadable counts as gone
        return False


@router.get(
    "/exports/{export_id}/download",
    responses={
        409: {"description": "The export is not completed yet."},
        410: {"description": "The export completed but its directory was deleted or moved."},
    },
)
async def download_export(
    export_id: uuid.UUID, session: AsyncSession = session_dep
) -> StreamingResponse:
    """The export directory as a streamed tar.gz archive (409 until it is completed)."""
    row = await _get(session, export_id)
    if row["status"] != "completed" or not row["path"]:
        raise HTTPException(
            status_code=409,
            detail={"field": "export_id", "message": f"export {export_id} is {row['status']}"},
        )
    root = Path(row["path"])
    if not await asyncio.to_thread(files_present, root):
        # An empty archive would look like a successful download of nothing.
        raise HTTPException(
            status_code=410,
            detail={
                "field": "export_id",
                "message": f"export {export_id}'s files are missing (no directory at {root}): "
                "it was deleted or moved; request a new export",
            },
        )
    name = f"tinystories-export-{export_id}"
    return StreamingResponse(
        tar_stream(root, name),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar.gz"'},
    )


@router.get("/stats/duplicates")
async def duplicate_stats(
    job_id: uuid.UUID | None = None, session: AsyncSession = session_dep
) -> dict[str, Any]:
    """Duplicate rate per job and model, and overall."""
    rows = await dedup_store.duplicate_stats(session=session, job_id=job_id)
    checked = sum(r["checked"] for r in rows)
    dups = sum(r["duplicates"] for r in rows)
    return {
        "items": rows,
        "checked": checked,
        "duplicates": dups,
        "duplicate_rate": round(dups / checked, 6) if checked else 0.0,
        "params": await dedup_store.stored_params(session=session),
    }
