"""/admin/stories: the story browser (filtered keyset pages) and one story with its cluster.

Bad input (an unknown filter value, a cursor out of range, a story that does not exist) is
answered with a 4xx page that says what was wrong, never a 500.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.deps import session_dep
from service.dashboard.access import authorized, login_page, templates
from service.store import browse
from service.store.storable import has_nul
from vocab.word_rules import normalize_word, word_problem

router = APIRouter(prefix="/admin", include_in_schema=False)
FILTERS = ("job", "status", "check", "dup", "feature", "word", "q", "before", "after", "limit")
DUPLICATES = {"unique": "unique", "near": "near_duplicate", "exact": "exact_duplicate"}
_WORD = re.compile(r"^[A-Za-z][A-Za-z' -]{0,99}$")


class BadFilter(ValueError):
    """A filter value the browser cannot use; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _cursor(name: str, raw: str | None) -> int | None:
    if raw in (None, ""):
        return None
    try:
        value = int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise BadFilter(name, f"{raw!r} is not a story id") from None
    if not 1 <= value <= browse.MAX_ID:
        raise BadFilter(name, f"{value} is out of range (1 to {browse.MAX_ID})")
    return value


def parse_filters(params: dict[str, str]) -> tuple[browse.StoryFilter, dict[str, Any]]:
    """StoryFilter and paging from query parameters; BadFilter names the first bad one."""
    from generator.checks import CHECK_NAMES
    from vocab import FEATURES

    unknown = sorted(set(params) - set(FILTERS))
    if unknown:
        raise BadFilter(unknown[0], f"unknown filter (known: {', '.join(FILTERS)})")
    for name, value in params.items():
        if has_nul(value):  # Postgres text cannot hold it: the search would fail in SQL
            raise BadFilter(name, "must not contain NUL characters")
    get = {k: v.strip() for k, v in params.items() if v.strip()}
    job_id = None
    if "job" in get:
        try:
            job_id = uuid.UUID(get["job"])
        except ValueError:
            raise BadFilter("job", f"{get['job']!r} is not a job id") from None
    status = get.get("status")
    if status not in (None, "accepted", "rejected"):
        raise BadFilter("status", f"{status!r} is not one of accepted, rejected")
    check = get.get("check")
    if check is not None and check not in CHECK_NAMES:
        raise BadFilter("check", f"{check!r} is not a check ({', '.join(CHECK_NAMES)})")
    dup = get.get("dup")
    if dup is not None and dup not in DUPLICATES:
        raise BadFilter("dup", f"{dup!r} is not one of {', '.join(DUPLICATES)}")
    features = [f.name for f in FEATURES]
    feature = get.get("feature")
    if feature is not None and feature not in features:
        raise BadFilter("feature", f"{feature!r} is not a feature ({', '.join(features)})")
    word = get.get("word")
    if word is not None:
        word = normalize_word(word)  # stored recipe words are NFC, of any script
        if len(word) > 100 or (word_problem(word) is not None and not _WORD.match(word)):
            raise BadFilter("word", "a recipe word is letters (with - or ') up to 100 characters")
    search = get.get("q")
    if search is not None and not 2 <= len(search) <= 200:
        raise BadFilter("q", "search text must be 2 to 200 characters")
    before, after = _cursor("before", get.get("before")), _cursor("after", get.get("after"))
    if before is not None and after is not None:
        raise BadFilter("after", "give before or after, not both")
    limit = 50
    if "limit" in get:
        if not get["limit"].isdigit() or not 10 <= int(get["limit"]) <= 200:
            raise BadFilter("limit", "limit must be a whole number from 10 to 200")
        limit = int(get["limit"])
    filters = browse.StoryFilter(
        job_id=job_id,
        accepted=None if status is None else status == "accepted",
        check=check,
        duplicate=DUPLICATES.get(dup or ""),
        feature=feature,
        word=word.lower() if word else None,
        search=search,
    )
    return filters, {"before": before, "after": after, "limit": limit, "values": get}


def _page_link(values: dict[str, str], **cursor: int) -> str:
    kept = {k: v for k, v in values.items() if k not in ("before", "after")}
    return "/admin/stories?" + urlencode({**kept, **cursor})


async def _job_choices(session: AsyncSession) -> list[dict[str, Any]]:
    from service.store import dashboard as reads

    return [
        {"id": str(j["id"]), "label": f"{j['name'] or str(j['id'])[:8]} ({j['status']})"}
        for j in await reads.dashboard_jobs(session=session, limit=50)
    ]


def _render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = templates.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


@router.get("/stories", response_class=HTMLResponse)
async def stories_page(request: Request, session: AsyncSession = session_dep) -> Any:
    """A page of stories under the query's filters."""
    from generator.checks import CHECK_NAMES
    from vocab import FEATURES

    if not await authorized(request):
        return login_page(request, status_code=401)
    context: dict[str, Any] = {
        "checks": CHECK_NAMES,
        "features": [f.name for f in FEATURES],
        "duplicates": list(DUPLICATES),
        "jobs": await _job_choices(session),
    }
    try:
        filters, paging = parse_filters(dict(request.query_params))
    except BadFilter as exc:
        values = {k: v for k, v in request.query_params.items() if k in FILTERS}
        return _render("stories.html", 400, error=str(exc), values=values, page=None, **context)
    if filters.job_id is not None and filters.job_id not in {
        uuid.UUID(j["id"]) for j in context["jobs"]
    }:
        from service import store

        try:
            await store.get_job(session=session, job_id=filters.job_id)
        except store.JobNotFound:
            error = f"job: no job {filters.job_id}"
            return _render("stories.html", 404, error=error, values=paging["values"], page=None,
                           **context)  # fmt: skip
    page = await browse.browse_stories(
        session=session,
        filters=filters,
        before=paging["before"],
        after=paging["after"],
        limit=paging["limit"],
    )
    values = paging["values"]
    return _render(
        "stories.html",
        values=values,
        page=page,
        older_link=_page_link(values, before=page.older) if page.older else None,
        newer_link=_page_link(values, after=page.newer) if page.newer else None,
        error=None,
        **context,
    )


@router.get("/stories/{story_id}", response_class=HTMLResponse)
async def story_page(story_id: str, request: Request, session: AsyncSession = session_dep) -> Any:
    """One story: prompt, recipe, checks, cost, latency and its near-duplicate cluster."""

    if not await authorized(request):
        return login_page(request, status_code=401)
    try:
        sid = _cursor("story id", story_id)
    except BadFilter as exc:
        return _render("story.html", 400, error=str(exc), story=None)
    story = await browse.story_detail(session=session, story_id=sid)  # type: ignore[arg-type]
    if story is None:
        return _render("story.html", 404, error=f"story {sid} does not exist", story=None)
    root, members, total = await browse.cluster_of(session=session, story=story)
    return _render(
        "story.html", error=None, story=story, root=root, members=members, cluster_size=total
    )
