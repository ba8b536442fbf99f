"""Request dependencies: the session (commit on success), the bearer token check."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

_bearer = HTTPBearer(auto_error=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; the request owns the transaction (use `session_dep`)."""
    async with request.app.state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def require_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> None:
    """401 unless the request carries the admin bearer token."""
    expected: str = request.app.state.admin_token
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), expected.encode()
    ):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def not_found(field: str, message: str) -> HTTPException:
    """A 404 naming the path parameter that matched nothing (the body's `field`)."""
    return HTTPException(status_code=404, detail={"field": field, "message": message})


# Commit before the response is sent (FastAPI's default "request" scope ends a yield dependency
# after sending): a client that got 201 must find the job it created, and a failed commit must
# not have been answered with a success.
session_dep = Depends(get_session, scope="function")
