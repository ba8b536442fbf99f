"""SQL of the API's own state: dashboard sessions and idempotency keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


def secret_hash(secret: str) -> str:
    """What is stored of a session secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_session(*, session: AsyncSession, secret: str, lifetime_s: float) -> None:
    """A dashboard login valid for lifetime_s."""
    await session.execute(
        text(
            "INSERT INTO admin_sessions (secret_hash, expires_at) "
            "VALUES (:h, now() + make_interval(secs => :s))"
        ),
        {"h": secret_hash(secret), "s": lifetime_s},
    )


async def session_is_valid(*, session: AsyncSession, secret: str) -> bool:
    """True for a login that is neither expired nor revoked."""
    row = await session.execute(
        text(
            "SELECT 1 FROM admin_sessions WHERE secret_hash = :h "
            "AND revoked_at IS NULL AND expires_at > now()"
        ),
        {"h": secret_hash(secret)},
    )
    return row.first() is not None


async def revoke_session(*, session: AsyncSession, secret: str) -> bool:
    """End a login (and forget logins that expired a day ago). True if it was live."""
    await session.execute(
        text("DELETE FROM admin_sessions WHERE expires_at < now() - make_interval(days => 1)")
    )
    result = await session.execute(
        text(
            "UPDATE admin_sessions SET revoked_at = now() "
            "WHERE secret_hash = :h AND revoked_at IS NULL"
        ),
        {"h": secret_hash(secret)},
    )
    return bool(result.rowcount)


@dataclass(frozen=True)
class IdempotentResult:
    """What an earlier request with the same key created."""

    request_hash: str
    resource_id: str
    status_code: int


KEY_LIFETIME = timedelta(days=1)


async def claim_idempotency_key(
    *,
    session: AsyncSession,
    route: str,
    key: str,
    request_hash: str,
    resource_id: str,
    status_code: int,
) -> IdempotentResult | None:
    """Record `key` for what this request creates, in the caller's transaction; if another
    request holds the key, wait for it to commit and return what it created instead (the
    caller then rolls back its own work)."""
    await session.execute(
        text(
            "DELETE FROM idempotency_keys WHERE route = :r AND key = :k "
            "AND created_at < now() - make_interval(secs => :ttl)"
        ),
        {"r": route, "k": key, "ttl": KEY_LIFETIME.total_seconds()},
    )
    inserted = await session.execute(
        text(
            "INSERT INTO idempotency_keys (route, key, request_hash, resource_id, status_code) "
            "VALUES (:r, :k, :h, :id, :code) ON CONFLICT (route, key) DO NOTHING RETURNING 1"
        ),
        {"r": route, "k": key, "h": request_hash, "id": resource_id, "code": status_code},
    )
    if inserted.first() is not None:
        return None
    row = (
        await session.execute(
            text(
                "SELECT request_hash, resource_id, status_code FROM idempotency_keys "
                "WHERE route = :r AND key = :k"
            ),
            {"r": route, "k": key},
        )
    ).first()
    assert row is not None
    return IdempotentResult(row[0], row[1], row[2])


async def find_idempotency_key(
    *, session: AsyncSession, route: str, key: str
) -> IdempotentResult | None:
    """What `key` created on `route`, if anything (within its lifetime)."""
    row = (
        await session.execute(
            text(
                "SELECT request_hash, resource_id, status_code FROM idempotency_keys "
                "WHERE route = :r AND key = :k "
                "AND created_at >= now() - make_interval(secs => :ttl)"
            ),
            {"r": route, "k": key, "ttl": KEY_LIFETIME.total_seconds()},
        )
    ).first()
    return IdempotentResult(row[0], row[1], row[2]) if row else None
