"""The admin dashboard at /admin: a server-rendered page that polls JSON data endpoints.

`install(app)` adds the routes to the API app. Authentication is the API's admin token, sent
as `Authorization: Bearer`, or a login session: the form checks the token once and sets an
HttpOnly cookie holding a random secret that the database knows by its hash; logout revokes
it for every API process.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.deps import session_dep
from service.dashboard import data, stories
from service.dashboard.access import (
    COOKIE_MAX_AGE_S,
    COOKIE_NAME,
    HERE,
    authorized,
    login_page,
    templates,
    unauthorized_json,
)
from service.dashboard.history import SinceStart

logger = logging.getLogger(__name__)

# Browsers cannot add custom headers to cross-site form posts: requiring one on job actions
# keeps a cookie-authenticated click from being forged by another site.
ACTION_HEADER = "x-dashboard-action"
SECTIONS = ("overview", "rates", "cost", "health", "jobs", "diversity", "providers", "batches")
STATIC_TYPES = {
    "dashboard.js": "text/javascript",
    "charts.js": "text/javascript",
    "diversity.js": "text/javascript",
    "dashboard.css": "text/css",
}


def _secure_cookie(request: Request) -> bool:
    """TINYSTORIES_COOKIE_SECURE when set (behind a TLS proxy), else whether this is HTTPS."""
    configured = getattr(request.app.state.settings, "cookie_secure", None)
    return request.url.scheme == "https" if configured is None else bool(configured)


async def _section(request: Request, session: AsyncSession, name: str) -> dict[str, Any]:
    settings = request.app.state.settings
    if name == "overview":
        provider = getattr(request.app.state, "provider_info", {})
        return await data.overview(session=session, settings=settings, provider=provider)
    history = history_of(request.app)
    if name == "rates":
        window = request.query_params.get("window") or "job"
        return await data.rates(session=session, settings=settings, history=history, window=window)
    if name == "diversity":
        from service.store.diversity_report import diversity_report

        job = request.query_params.get("job") or None
        report = await diversity_report(session=session, job_id=data.parse_job_id(job or ""))
        return report if job is None or report["job_id"] else {}
    if name == "cost":
        return await data.cost(session=session, history=history)
    if name == "health":
        return await data.health(session=session, history=history)
    if name == "providers":
        return await data.providers(session=session, settings=settings)
    if name == "batches":
        return await data.batches(session=session)
    return await data.jobs(session=session)


def history_of(app: FastAPI) -> SinceStart:
    """The app's since-start totals keeper (made on first use)."""
    history = getattr(app.state, "dashboard_history", None)
    if history is None:
        history = app.state.dashboard_history = SinceStart()
    return history


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element (no closing tag can appear)."""
    return _dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


router = APIRouter(prefix="/admin", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def dashboard_page(request: Request, session: AsyncSession = session_dep) -> Any:
    """The dashboard, or the login form (401) without a valid token."""
    if not await authorized(request):
        return login_page(request, status_code=401)
    sections = {name: await _section(request, session, name) for name in SECTIONS}
    html = templates.get_template("dashboard.html").render(
        overview=sections["overview"],
        jobs=sections["jobs"]["jobs"],
        initial=_script_json(sections),
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    """The login form."""
    return login_page(request, status_code=200)


@router.post("/login")
async def login(request: Request, session: AsyncSession = session_dep) -> Response:
    """Check the posted token; on success start a session (HttpOnly cookie), go to /admin."""
    from service.store.api_state import create_session

    form = await request.form()
    token = str(form.get("token") or "").strip()
    expected = getattr(request.app.state, "admin_token", "")
    if not token or not secrets.compare_digest(token.encode(), expected.encode()):
        logger.warning("dashboard login refused client=%s", request.client and request.client.host)
        return login_page(request, status_code=401, error="Wrong token.")
    secret = secrets.token_urlsafe(32)
    await create_session(session=session, secret=secret, lifetime_s=COOKIE_MAX_AGE_S)
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        secret,
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=_secure_cookie(request),
        path="/",
    )
    logger.info("dashboard login client=%s", request.client and request.client.host)
    return response


@router.post("/logout")
async def logout(request: Request, session: AsyncSession = session_dep) -> Response:
    """End the session for every API process, and forget the cookie."""
    from service.store.api_state import revoke_session

    cookie = request.cookies.get(COOKIE_NAME)
    if cookie and len(cookie) <= 200:
        await revoke_session(session=session, secret=cookie)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


@router.get("/data/{section}")
async def section_data(
    section: str, request: Request, session: AsyncSession = session_dep
) -> Response:
    """One block of the dashboard's figures as JSON."""
    if not await authorized(request):
        return unauthorized_json()
    if section not in SECTIONS:
        return JSONResponse(
            status_code=404,
            content={"error": f"unknown section {section!r}", "field": "section"},
        )
    problem = await _bad_query(request, session, section)
    if problem is not None:
        return problem
    payload = await _section(request, session, section)
    return Response(_dumps(payload), media_type="application/json")


async def _bad_query(request: Request, session: AsyncSession, section: str) -> Response | None:
    """A 4xx for a query value a section cannot use (unknown window, job id)."""
    window = request.query_params.get("window")
    if section == "rates" and window is not None and window not in data.WINDOWS:
        return JSONResponse(
            status_code=422,
            content={
                "error": f"window must be one of {', '.join(data.WINDOWS)}",
                "field": "window",
            },
        )
    job = request.query_params.get("job")
    if section == "diversity" and job:
        from service import store

        parsed = data.parse_job_id(job)
        if parsed is None:
            return JSONResponse(
                status_code=422, content={"error": "job id is not a UUID", "field": "job"}
            )
        try:
            await store.get_job(session=session, job_id=parsed)
        except store.JobNotFound:
            return JSONResponse(
                status_code=404, content={"error": f"job {job} not found", "field": "job"}
            )
    return None


@router.post("/jobs/{job_id}/{action}")
async def job_action(
    job_id: str, action: str, request: Request, session: AsyncSession = session_dep
) -> Response:
    """Pause, resume or cancel a job from the page (same rules as the REST API)."""
    from service import store

    if not await authorized(request):
        return unauthorized_json()
    if request.headers.get(ACTION_HEADER) != action:
        return JSONResponse(
            status_code=403, content={"error": "missing action header", "field": ACTION_HEADER}
        )
    if action not in ("pause", "resume", "cancel"):
        return JSONResponse(
            status_code=404, content={"error": f"unknown action {action!r}", "field": "action"}
        )
    parsed = data.parse_job_id(job_id)
    if parsed is None:
        return JSONResponse(
            status_code=422, content={"error": "job id is not a UUID", "field": "job_id"}
        )
    try:
        job = await store.transition_job(session=session, job_id=parsed, action=action)
    except store.JobNotFound:
        return JSONResponse(
            status_code=404, content={"error": f"job {job_id} not found", "field": "job_id"}
        )
    except store.InvalidTransition as exc:
        return JSONResponse(status_code=409, content={"error": str(exc), "field": "action"})
    logger.info("dashboard job action job=%s action=%s status=%s", job_id, action, job.status)
    return JSONResponse({"id": str(job.id), "status": job.status})


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    """The page's own script and stylesheet (public: they hold no data)."""
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        return JSONResponse(status_code=404, content={"error": "not found", "field": "name"})
    body = (HERE / "static" / name).read_bytes()
    return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=300"})


def install(app: FastAPI) -> None:
    """Add /admin (page, login, logout, data, job actions, static files) to `app` (once)."""
    if getattr(app.state, "dashboard_installed", False):
        return
    app.state.dashboard_installed = True
    app.include_router(router)
    app.include_router(stories.router)
