"""/healthz (process alive) and /readyz (database reachable); no token needed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, object]:
    """The process is up."""
    info = request.app.state.provider_info
    return {"status": "ok", "provider": info["provider"], "simulator": info["simulator"]}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The database answers."""
    from service.api import database_ready

    ok = await database_ready(request.app)
    return JSONResponse(
        status_code=200 if ok else 503,
        content={"status": "ready" if ok else "database unavailable"},
    )
