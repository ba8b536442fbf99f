"""`Idempotency-Key` on creating POSTs: a client that retries (a timeout, a dropped
connection) gets what its first request created instead of a second job or export."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Header, HTTPException
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.api_state import IdempotentResult, claim_idempotency_key, find_idempotency_key

IDEMPOTENCY_HEADER = Header(
    default=None,
    alias="Idempotency-Key",
    min_length=1,
    max_length=255,
    pattern=r"^[\x21-\x7e]+$",
    description="Any unique string (a UUID): a retry with the same key and body returns what "
    "the first request created; the same key with another body is a 409. Kept for a day.",
)


def request_hash(body: Any) -> str:
    """A fingerprint of the request body (a pydantic model)."""
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


def _check_same_request(found: IdempotentResult, fingerprint: str) -> None:
    if found.request_hash != fingerprint:
        raise HTTPException(
            status_code=409,
            detail={
                "field": "Idempotency-Key",
                "message": "this key was used for a different request body",
            },
        )


async def earlier_result(
    session: AsyncSession, route: str, key: str | None, fingerprint: str
) -> IdempotentResult | None:
    """What a finished earlier request with this key created (None: go ahead)."""
    if key is None:
        return None
    found = await find_idempotency_key(session=session, route=route, key=key)
    if found is not None:
        _check_same_request(found, fingerprint)
    return found


async def record_result(
    session: AsyncSession,
    route: str,
    key: str | None,
    fingerprint: str,
    resource_id: str,
    status_code: int,
) -> IdempotentResult | None:
    """Bind the key to what this request created, in its transaction. If a concurrent request
    with the same key won, this request's work is rolled back and the winner's is returned."""
    if key is None:
        return None
    winner = await claim_idempotency_key(
        session=session,
        route=route,
        key=key,
        request_hash=fingerprint,
        resource_id=resource_id,
        status_code=status_code,
    )
    if winner is not None:
        await session.rollback()
        _check_same_request(winner, fingerprint)
    return winner
