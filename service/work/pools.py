"""Provider pools in a worker: pooled models through their pool, others through one client.

`PoolRouter` has the client interface the engine uses (`chat(model=...)`, `provider`,
`base_url`, `aclose`). A model named in TINYSTORIES_PROVIDERS goes to its pool (weighted
members, circuit breakers: generator.pool); every other model goes to the single configured
provider, as without pools.

A member's own `rpm`/`tpm` become a shared Postgres bucket keyed `MODEL@MEMBER`
(`share_member_limits`), drawn through the same `PostgresRateLimiter` as model limits, so a
member's limit holds across every worker process and host. A breaker lives in its process;
the heartbeat stores what it learned (`snapshot`) for the API to merge, and opens the members
other live workers report open (`adopt_peers`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from generator.client import ChatResult
from generator.errors import ProviderError
from generator.pool import ProviderPools
from generator.ratelimit import ModelLimits, Permit

log = logging.getLogger(__name__)
RATE_WINDOW_S = 60.0  # requests/tokens per minute are measured over about this long
POOL_PROVIDER = "pool"  # the provider of a pooled call no member could take
MIN_ADOPTED_S = 1.0  # a peer's open state about to end is not worth taking on


def bucket_key(model: str, member: str) -> str:
    """The shared rate bucket of one pool member."""
    return f"{model}@{member}"


def member_limits(pools: ProviderPools) -> dict[str, ModelLimits]:
    """Shared-bucket limits of every member with its own rpm or tpm."""
    return {
        bucket_key(pool.model, m.name): ModelLimits(rpm=m.config.rpm, tpm=m.config.tpm)
        for pool in pools.pools.values()
        for m in pool.members
        if m.config.rpm or m.config.tpm
    }


class MemberLimiter:
    """A member's rpm/tpm drawn from its shared Postgres bucket instead of process memory."""

    def __init__(self, shared: Any, key: str) -> None:
        self.shared = shared
        self.key = key

    async def acquire(self, *, model: str, est_tokens: int, **_: Any) -> Permit:
        """Wait for the member's shared bucket (`model` is the member's own model name)."""
        del model
        permit: Permit = await self.shared.acquire(model=self.key, est_tokens=est_tokens)
        return permit

    async def settle(self, permit: Permit, **kwargs: Any) -> None:
        """Token difference locally; a 429 pauses this member, for every process."""
        await self.shared.settle(permit, **kwargs)


def share_member_limits(pools: ProviderPools, shared: Any) -> dict[str, ModelLimits]:
    """Put each limited member on its shared bucket of `shared` (a PostgresRateLimiter whose
    `limits` gain the `MODEL@MEMBER` entries; call its `setup()` afterwards)."""
    limits = member_limits(pools)
    shared.limits.update(limits)
    for pool in pools.pools.values():
        for member in pool.members:
            key = bucket_key(pool.model, member.name)
            if key in limits:
                member.limiter = MemberLimiter(shared, key)
    return limits


class PoolRouter:
    """Pooled models through their pool, every other model through `fallback`."""

    def __init__(self, pools: ProviderPools, fallback: Any) -> None:
        self.pools = pools
        self.fallback = fallback
        # TPM accounting is chosen from one URL per engine: the single provider's.
        self.base_url = getattr(fallback, "base_url", None)
        self.tokens: dict[tuple[str, str], int] = {}
        self._history: deque[tuple[float, dict[tuple[str, str], tuple[int, int]]]] = deque()

    def __repr__(self) -> str:
        return f"PoolRouter(pools={sorted(self.pools.pools)}, fallback={self.fallback!r})"

    @property
    def provider(self) -> str:
        """The single provider's name; a pooled call names its member on its result or error
        (`ProviderError.provider`), or POOL_PROVIDER when no member could take it."""
        return getattr(self.fallback, "provider", "unknown")

    def serves(self, model: str) -> bool:
        """Whether `model` goes through a pool."""
        return model in self.pools.pools

    async def chat(self, *, model: str, messages: list[dict], **kwargs: Any) -> ChatResult:
        """One attempt: through the model's pool, or the single provider."""
        if not self.serves(model):
            result: ChatResult = await self.fallback.chat(model=model, messages=messages, **kwargs)
            return result
        try:
            result = await self.pools.chat(model=model, messages=messages, **kwargs)
        except ProviderError as exc:
            exc.provider = exc.provider or POOL_PROVIDER
            self._count(model, exc.provider, exc.prompt_tokens + exc.completion_tokens)
            raise
        self._count(model, result.provider, result.prompt_tokens + result.completion_tokens)
        return result

    def _count(self, model: str, member: str | None, tokens: int) -> None:
        if member and member != POOL_PROVIDER and tokens:
            key = (model, member)
            self.tokens[key] = self.tokens.get(key, 0) + tokens

    def snapshot(self) -> list[dict[str, Any]]:
        """The pools' snapshot plus, per member, tokens and requests/tokens per minute over
        about the last RATE_WINDOW_S (measured between calls of this method)."""
        now = time.monotonic()
        pools = self.pools.snapshot()
        keys = [(pool["model"], m) for pool in pools for m in pool["members"]]
        counts = {
            (model, m["name"]): (m["requests"], self.tokens.get((model, m["name"]), 0))
            for model, m in keys
        }
        while len(self._history) > 1 and now - self._history[1][0] >= RATE_WINDOW_S:
            self._history.popleft()
        since, before = self._history[0] if self._history else (now, counts)
        minutes = (now - since) / 60.0
        for pool in pools:
            for m in pool["members"]:
                key = (pool["model"], m["name"])
                requests, tokens = counts[key]
                old_requests, old_tokens = before.get(key, (0, 0))
                m["tokens"] = tokens
                m["requests_per_minute"] = (requests - old_requests) / minutes if minutes else None
                m["tokens_per_minute"] = (tokens - old_tokens) / minutes if minutes else None
        self._history.append((now, counts))
        return pools

    def adopt_peers(self, peers: list[dict[str, Any]]) -> list[str]:
        """Open each closed member that another live worker reports open, for what is left
        of that worker's cool-down (less the age of its heartbeat): a member one process saw
        fail is down for all, and each would otherwise spend its own failed requests (and
        timeouts) finding out. `peers`: `service.store.providers.live_snapshots` rows of the
        other workers. Returns "MODEL/MEMBER" of each member opened."""
        left: dict[tuple[str, str], float] = {}
        for peer in peers:
            age = float(peer.get("age_s") or 0.0)
            for pool in peer.get("pools") or []:
                for m in pool.get("members") or []:
                    wait = float(m.get("retry_in_s") or 0.0) - age
                    if m.get("state") == "open" and wait >= MIN_ADOPTED_S:
                        key = (str(pool.get("model")), str(m.get("name")))
                        left[key] = max(left.get(key, 0.0), wait)
        opened = []
        for (model, name), wait in sorted(left.items()):
            pool = self.pools.pools.get(model)
            member = next((m for m in pool.members if m.name == name), None) if pool else None
            if member is not None and member.breaker.adopt_open(wait):
                opened.append(f"{model}/{name}")
                log.warning(
                    "pool_member_breaker member=%s state=open source=peer retry_in_s=%.0f",
                    name,
                    wait,
                )
        return opened

    async def aclose(self) -> None:
        """Close every member's client and the single provider's."""
        await self.pools.aclose()
        close = getattr(self.fallback, "aclose", None)
        if close is not None:
            await close()
