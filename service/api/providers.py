"""/v1/providers: each provider pool's members as the live workers see them (no keys)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.deps import require_token, session_dep
from service.store.providers import provider_pools

router = APIRouter(prefix="/v1", tags=["providers"], dependencies=[Depends(require_token)])


class MemberOut(BaseModel):
    """One endpoint of a pool, merged over the live workers."""

    name: str
    base_url: str | None = Field(None, description="Credentials in the URL are redacted.")
    model: str | None = Field(None, description="The member's own model name, if it has one.")
    weight: float | None = None
    state: str = Field(
        description="Worst breaker state any live worker reports: closed, half_open or open."
    )
    workers: int = Field(description="Live workers that report this member.")
    workers_open: int = Field(description="How many of them see its breaker open.")
    workers_half_open: int
    retry_in_s: float | None = Field(None, description="Longest wait until a probe, if open.")
    requests: int = Field(description="Sums over the live workers since each started.")
    successes: int
    errors: int
    tokens: int
    times_opened: int
    requests_per_minute: float = Field(description="Over each worker's last minute, summed.")
    tokens_per_minute: float
    rpm: int | None = Field(None, description="The member's own limit, shared by all workers.")
    tpm: int | None = None
    last_error: str | None = Field(None, description="Newest error, credentials redacted.")
    last_error_at: float | None = Field(None, description="Unix time of last_error.")


class PoolOut(BaseModel):
    """The members serving one model."""

    model: str
    workers: int
    healthy: int = Field(description="Members whose breaker is closed on every live worker.")
    members: list[MemberOut]


class ProvidersOut(BaseModel):
    """Provider pools (empty when no live worker has TINYSTORIES_PROVIDERS)."""

    workers: int = Field(description="Live workers that reported pools.")
    pools: list[PoolOut]


def stale_after_s(request: Request) -> float:
    """A worker heard from longer ago than this is not live (as the dashboard counts it)."""
    return max(3 * request.app.state.settings.heartbeat_seconds, 30.0)


async def read_pools(request: Request, session: AsyncSession) -> dict[str, Any]:
    """The merged pools for this app's settings."""
    return await provider_pools(session=session, stale_after_s=stale_after_s(request))


@router.get("/providers", response_model=ProvidersOut)
async def list_providers(request: Request, session: AsyncSession = session_dep) -> Any:
    """Each pool member's breaker state, requests, errors, newest error and rates."""
    return await read_pools(request, session)
