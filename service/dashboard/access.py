"""Dashboard access: the admin token or a login session, the login page, page templates."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

COOKIE_NAME = "tinystories_admin"
COOKIE_MAX_AGE_S = 12 * 3600
HERE = Path(__file__).parent
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
)


def bearer_matches(request: Request) -> bool:
    """True when the Authorization header carries the admin token."""
    expected = getattr(request.app.state, "admin_token", None)
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not credentials.strip():
        return False
    return secrets.compare_digest(credentials.strip().encode(), expected.encode())


async def authorized(request: Request) -> bool:
    """The admin token as a bearer header, or a live dashboard login session."""
    if bearer_matches(request):
        return True
    cookie = request.cookies.get(COOKIE_NAME)
    sessionmaker = getattr(request.app.state, "sessionmaker", None)
    if not cookie or sessionmaker is None or len(cookie) > 200:
        return False
    from service.store.api_state import session_is_valid

    async with sessionmaker() as session:
        return await session_is_valid(session=session, secret=cookie)


def unauthorized_json() -> JSONResponse:
    return JSONResponse(
        status_code=401,
        content={"error": "missing or wrong admin token", "field": "authorization"},
        headers={"WWW-Authenticate": "Bearer"},
    )


def login_page(request: Request, *, status_code: int, error: str | None = None) -> HTMLResponse:
    html = templates.get_template("login.html").render(error=error)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
