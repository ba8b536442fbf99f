"""Provider pools as the live workers see them: each heartbeat's snapshot, merged per member.

A breaker lives in one worker process, so the merged state of a member is the worst any live
worker reports, with how many workers see it open; counters are sums over the live workers
(since each started), rates sums of each worker's last minute.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from generator.errors import redact

STATES = ("closed", "half_open", "open")  # best to worst
_SUMMED = ("requests", "successes", "errors", "tokens", "times_opened")
_RATES = ("requests_per_minute", "tokens_per_minute")


async def live_snapshots(*, session: AsyncSession, stale_after_s: float) -> list[dict[str, Any]]:
    """(worker id, pools snapshot, seconds since that heartbeat) of running workers heard
    from within `stale_after_s`."""
    rows = await session.execute(
        text(
            "SELECT id, providers, EXTRACT(EPOCH FROM (now() - heartbeat_at)) "
            "FROM workers WHERE status = 'running' "
            "AND providers IS NOT NULL "
            "AND heartbeat_at > now() - make_interval(secs => :stale) ORDER BY id"
        ),
        {"stale": stale_after_s},
    )
    return [{"worker": wid, "pools": pools, "age_s": float(age)} for wid, pools, age in rows]


def _member_view(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "state": "closed",
        "workers": 0,
        "workers_open": 0,
        "workers_half_open": 0,
        **dict.fromkeys(_SUMMED, 0),
        **dict.fromkeys(_RATES, 0.0),
        "retry_in_s": None,
        "last_error": None,
        "last_error_at": None,
    }


def merge_snapshots(snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per pool and member across workers: worst state, sums, newest error."""
    pools: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots:
        for pool in snapshot["pools"] or []:
            view = pools.setdefault(
                pool["model"], {"model": pool["model"], "workers": 0, "members": {}}
            )
            view["workers"] += 1
            for m in pool.get("members", []):
                out = view["members"].setdefault(m["name"], _member_view(m["name"]))
                for key in ("model", "weight", "rpm", "tpm"):
                    out[key] = m.get(key)
                out["base_url"] = redact(str(m.get("base_url") or "")) or None
                state = m.get("state") if m.get("state") in STATES else "closed"
                out["workers"] += 1
                if state != "closed":
                    out[f"workers_{state}"] += 1
                if STATES.index(state) > STATES.index(out["state"]):
                    out["state"] = state
                for key in _SUMMED:
                    out[key] += int(m.get(key) or 0)
                for key in _RATES:
                    out[key] += float(m.get(key) or 0.0)
                if state == "open":
                    wait = float(m.get("retry_in_s") or 0.0)
                    out["retry_in_s"] = max(out["retry_in_s"] or 0.0, wait)
                at = m.get("last_error_at")
                if m.get("last_error") and (out["last_error_at"] or 0) <= (at or 0):
                    # Redacted by the worker already; again here, for rows written by others.
                    out["last_error"], out["last_error_at"] = redact(str(m["last_error"])), at
    merged = []
    for name in sorted(pools):
        view = pools[name]
        members = list(view["members"].values())
        merged.append(
            {
                "model": name,
                "workers": view["workers"],
                "healthy": sum(1 for m in members if m["state"] == "closed"),
                "members": members,
            }
        )
    return merged


async def provider_pools(*, session: AsyncSession, stale_after_s: float) -> dict[str, Any]:
    """The merged pools of the live workers, and how many workers reported."""
    snapshots = await live_snapshots(session=session, stale_after_s=stale_after_s)
    return {"workers": len(snapshots), "pools": merge_snapshots(snapshots)}
