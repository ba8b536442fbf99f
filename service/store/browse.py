"""The story browser's reads: keyset pages of stories under filters, one story's cluster.

Pages walk ids newest first (`before`) or oldest first (`after`), each filter served by an
index (models_diversity): a page costs the same on page 1 or page 20,000. Text search has no
index (a trigram or full-text index would cost every insert); it scans at most SCAN_WINDOW ids
per page and says where it stopped, so the next page goes on from there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

SCAN_WINDOW = 20_000
MAX_ID = 2**62
_COLUMNS = (
    "id, job_id, accepted, dedup_status, dedup_cluster_id, verb, noun, adjective, features, "
    "rejection_reasons, model, provider, cost_usd, latency_s, nn_jaccard, source, created_at, "
    "left(text, 240) AS preview"
)


@dataclass(frozen=True)
class StoryFilter:
    """Validated browser filters (None: not filtered)."""

    job_id: uuid.UUID | None = None
    accepted: bool | None = None
    check: str | None = None  # a rejection reason
    duplicate: str | None = None  # exact_duplicate | near_duplicate | unique
    feature: str | None = None
    word: str | None = None  # a recipe word (verb, noun or adjective)
    search: str | None = None  # words the text contains (case-insensitive)


@dataclass(frozen=True)
class StoryPage:
    """One page and the cursors of its neighbours (None: nothing that way)."""

    stories: list[dict[str, Any]]
    older: int | None  # the `before` of the next older page
    newer: int | None  # the `after` of the next newer page
    searched: tuple[int, int] | None  # text search: the ids [from, to) this page scanned


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(f: StoryFilter) -> tuple[list[str], dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if f.job_id is not None:
        clauses.append("job_id = :job_id")
        params["job_id"] = f.job_id
    if f.accepted is not None:
        clauses.append("accepted" if f.accepted else "NOT accepted")
    if f.check is not None:
        clauses.append("NOT accepted AND rejection_reasons @> CAST(:check AS jsonb)")
        params["check"] = f'["{f.check}"]'
    if f.duplicate is not None:
        clauses.append("dedup_status = :dup")
        params["dup"] = f.duplicate
    if f.feature is not None:
        clauses.append("features @> CAST(:feature AS jsonb)")
        params["feature"] = f'["{f.feature}"]'
    if f.word is not None:
        clauses.append("(verb = :word OR noun = :word OR adjective = :word)")
        params["word"] = f.word
    if f.search is not None:
        clauses.append("text ILIKE :search")
        params["search"] = "%" + _escape_like(f.search) + "%"
    return clauses, params


async def max_story_id(*, session: AsyncSession) -> int:
    """The newest story's id (0 when there is none)."""
    return int((await session.execute(text("SELECT COALESCE(max(id), 0) FROM stories"))).scalar())


async def browse_stories(
    *,
    session: AsyncSession,
    filters: StoryFilter,
    before: int | None = None,
    after: int | None = None,
    limit: int = 50,
) -> StoryPage:
    """A page of stories newest first: older than `before`, or newer than `after`."""
    clauses, params = _where(filters)
    newer = after is not None
    floor = ceiling = None
    if filters.search is not None:  # bounded scan: [floor, ceiling) by id
        if newer:
            floor = int(after)  # type: ignore[arg-type]
            ceiling = floor + SCAN_WINDOW + 1
        else:
            ceiling = before if before is not None else await max_story_id(session=session) + 1
            floor = max(ceiling - SCAN_WINDOW, 0)
        clauses.append("id >= :floor AND id < :ceiling")
        params.update(floor=floor, ceiling=ceiling)
    if before is not None:
        clauses.append("id < :before")
        params["before"] = before
    if after is not None:
        clauses.append("id > :after")
        params["after"] = after
    where = " AND ".join(clauses) or "TRUE"
    order = "ASC" if newer else "DESC"
    rows = await session.execute(
        text(f"SELECT {_COLUMNS} FROM stories WHERE {where} ORDER BY id {order} LIMIT :n"),
        {**params, "n": limit + 1},
    )
    stories = [dict(r._mapping) for r in rows]
    more = len(stories) > limit
    stories = stories[:limit]
    if newer:
        stories.reverse()
    window_left = filters.search is not None and not more
    if newer:
        older = stories[-1]["id"] if stories else after
        newer_cursor = stories[0]["id"] if more else (ceiling - 1 if window_left else None)
    else:
        older = stories[-1]["id"] if more else (floor if window_left and floor else None)
        newer_cursor = stories[0]["id"] if stories and before is not None else None
    searched = (floor, ceiling) if floor is not None and ceiling is not None else None
    return StoryPage(stories, older, newer_cursor, searched)


async def story_detail(*, session: AsyncSession, story_id: int) -> dict[str, Any] | None:
    """Every column of one story, None when there is no such story."""
    row = (
        await session.execute(
            text(
                "SELECT s.*, j.name AS job_name FROM stories s "
                "LEFT JOIN jobs j ON j.id = s.job_id WHERE s.id = :id"
            ),
            {"id": story_id},
        )
    ).first()
    return None if row is None else dict(row._mapping)


async def cluster_of(
    *, session: AsyncSession, story: dict[str, Any], limit: int = 12
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
    """(root, members shown, members in all) of the near-duplicate cluster a story is in."""
    root_id = story["dedup_cluster_id"] or story["id"]
    members = await session.execute(
        text(
            "SELECT id, dedup_status, nn_jaccard, left(text, 600) AS preview FROM stories "
            "WHERE dedup_cluster_id = :root ORDER BY id LIMIT :n"
        ),
        {"root": root_id, "n": limit},
    )
    shown = [dict(r._mapping) for r in members]
    if not shown and story["dedup_cluster_id"] is None:
        return None, [], 0
    total = (
        await session.execute(
            text("SELECT count(*) FROM stories WHERE dedup_cluster_id = :root"), {"root": root_id}
        )
    ).scalar()
    root = await story_detail(session=session, story_id=root_id)
    return root, shown, int(total or 0)
