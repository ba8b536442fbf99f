"""Provider pools: one model served by several endpoints, each behind a circuit breaker.

A pool picks a member at random by weight among those whose breaker lets a request through.
A breaker opens after `failures` consecutive server errors, timeouts (the engine's adaptive
deadline included) or connection failures, or after one 401/403 or exhausted quota (a revoked
key or an empty account does not heal by retrying); after a cool-down it lets one probe
through (half-open), closes when that succeeds and opens again, for twice as long, when it
fails. Other errors (400, 404, a plain 429, content filter) say nothing about the member's
health. A 401/403/quota error from one member is retryable while another member is available:
the caller's retry policy sends the request again and the pool routes it elsewhere.

`ProviderPools` speaks the engine's client interface (`chat`, `provider`, `base_url`,
`aclose`), so a `StoryEngine` can use a pool where it would use a `ChatClient`. Keys stay in
`MemberConfig` (never in reprs, logs or snapshots). The configuration format is in
`generator.pool_config` and docs/providers.md.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from generator.adaptive import deadline_expired
from generator.breaker import CLOSED, OPENS_AT_ONCE, BreakerPolicy, CircuitBreaker
from generator.client import ChatClient, ChatResult, ClientConfig
from generator.endpoint import base_url_problem
from generator.errors import ProviderError, redact, register_secret
from generator.ratelimit import LocalRateLimiter, ModelLimits, estimate_prompt_tokens

if TYPE_CHECKING:
    from generator.batch import BatchClient

log = logging.getLogger(__name__)

_DEFAULT_COMPLETION_TOKENS = 400  # what a request reserves from a member's TPM without max_tokens


@dataclass(frozen=True)
class MemberConfig:
    """One endpoint serving a pool's model."""

    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)  # never in logs, reprs or snapshots
    weight: float = 1.0
    model: str | None = None  # the member's own name for the model (e.g. an Azure deployment)
    rpm: int | None = None
    tpm: int | None = None
    timeout_s: float = 60.0

    def __repr__(self) -> str:  # a URL may carry credentials too (https://user:pw@host)
        return (
            f"MemberConfig(name={self.name!r}, base_url={redact(self.base_url)!r}, "
            f"weight={self.weight}, model={self.model!r}, rpm={self.rpm}, tpm={self.tpm})"
        )

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a pool member needs a name")
        if not self.weight > 0:
            raise ValueError(f"member {self.name!r}: weight must be > 0, got {self.weight}")
        register_secret(self.api_key)
        problem = base_url_problem(self.base_url, credentials_ok=True)  # a proxy's basic auth
        if problem:
            raise ValueError(f"member {self.name!r}: base_url {problem}")
        for limit in ("rpm", "tpm"):
            value = getattr(self, limit)
            if value is not None and value < 1:
                raise ValueError(f"member {self.name!r}: {limit} must be >= 1, got {value}")


class PoolMember:
    """A member's breaker, counters, client and own rate limiter."""

    def __init__(self, config: MemberConfig, breaker: CircuitBreaker) -> None:
        self.config = config
        self.breaker = breaker
        self.requests = 0
        self.successes = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # unix time
        self._client: ChatClient | None = None
        self.limiter: LocalRateLimiter | None = None
        if config.rpm or config.tpm:
            self.limiter = LocalRateLimiter(default=ModelLimits(rpm=config.rpm, tpm=config.tpm))

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"PoolMember({self.name!r}, state={self.breaker.state})"

    def client(self) -> ChatClient:
        """The member's Chat Completions client, built on first use (inside the event loop)."""
        if self._client is None:
            self._client = ClientConfig(
                base_url=self.config.base_url,
                api_key=self.config.api_key,
                timeout_s=self.config.timeout_s,
                provider=self.name,
            ).build()
        return self._client

    def batch_client(self) -> BatchClient:
        """A Batch API client for this member (a batch lives on the member that created it)."""
        from generator.batch import BatchClient

        return BatchClient(
            base_url=self.config.base_url, api_key=self.config.api_key, provider=self.name
        )

    def record(self, error: ProviderError | None) -> None:
        if error is None:
            self.successes += 1
            self.breaker.record_success()
            return
        self.errors += 1
        self.last_error = redact(f"{error.error_class} (status {error.status}): {error.message}")[
            :300
        ]
        self.last_error_at = time.time()
        before = self.breaker.state
        self.breaker.record_failure(error.error_class)
        if self.breaker.state != before:
            log.warning(
                "pool_member_breaker member=%s state=%s error_class=%s retry_in_s=%.0f",
                self.name,
                self.breaker.state,
                error.error_class,
                self.breaker.retry_in_s(),
            )

    def snapshot(self) -> dict[str, Any]:
        """Counters and state for a dashboard; no key."""
        return {
            "name": self.name,
            "base_url": redact(self.config.base_url),
            "model": self.config.model,
            "weight": self.config.weight,
            "state": self.breaker.state,
            "retry_in_s": round(self.breaker.retry_in_s(), 1),
            "requests": self.requests,
            "successes": self.successes,
            "errors": self.errors,
            "consecutive_failures": self.breaker.consecutive_failures,
            "times_opened": self.breaker.opened_count,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "rpm": self.config.rpm,
            "tpm": self.config.tpm,
        }

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class ProviderPool:
    """The members serving one model."""

    def __init__(
        self,
        model: str,
        members: list[MemberConfig],
        *,
        policy: BreakerPolicy | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not members:
            raise ValueError(f"pool {model!r} has no members")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"pool {model!r}: member names must be unique, got {names}")
        self.model = model
        self.policy = policy or BreakerPolicy()
        self.rng = rng or random.Random()
        self.members = [PoolMember(m, CircuitBreaker(self.policy, clock=clock)) for m in members]

    def __repr__(self) -> str:
        return f"ProviderPool({self.model!r}, members={[m.name for m in self.members]})"

    def _any_available(self) -> bool:
        return any(m.breaker.available() for m in self.members)

    def choose(self) -> PoolMember:
        """A member by weight among those available; ProviderError when none is."""
        ready = [m for m in self.members if m.breaker.available()]
        if not ready:
            wait = min(m.breaker.retry_in_s() for m in self.members)
            states = ", ".join(f"{m.name}: {m.breaker.state}" for m in self.members)
            raise ProviderError(
                "connection",
                message=f"pool {self.model!r} has no healthy member ({states})",
                retry_after=max(wait, 0.1),
            )
        member = self.rng.choices(ready, weights=[m.config.weight for m in ready])[0]
        member.breaker.begin()
        member.requests += 1
        return member

    async def chat(
        self,
        *,
        messages: list[dict],
        max_tokens: int | None = None,
        temperature: float = 1.0,
        **extra: Any,
    ) -> ChatResult:
        """One attempt on one member (no hidden retries: `generator.retry` decides)."""
        member = self.choose()
        model = member.config.model or self.model
        permit = None
        try:
            if member.limiter is not None:
                est = estimate_prompt_tokens(messages) + (max_tokens or _DEFAULT_COMPLETION_TOKENS)
                permit = await member.limiter.acquire(model=model, est_tokens=est)
            # The member's own timeout caps the engine's transport backstop.
            backstop = extra.pop("timeout_s", None)
            timeout_s = min(member.config.timeout_s, backstop or member.config.timeout_s)
            result = await member.client().chat(
                model=model,
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                timeout_s=timeout_s,
                **extra,
            )
        except ProviderError as exc:
            exc.provider = member.name
            member.record(exc)
            if exc.error_class in OPENS_AT_ONCE and self._any_available():
                # This member's key is refused; for the pool the request may still succeed.
                exc.retryable = True
            if permit is not None:
                await member.limiter.settle(  # type: ignore[union-attr]
                    permit,
                    actual_tokens=exc.prompt_tokens + exc.completion_tokens,
                    headers=exc.headers,
                    status=exc.status,
                    retry_after=exc.retry_after,
                )
            raise
        except BaseException:
            if deadline_expired():  # the adaptive deadline gave up on this member
                member.record(ProviderError("timeout", message="no answer before the deadline"))
            else:
                member.breaker.release()
            if permit is not None:
                await member.limiter.settle(permit)  # type: ignore[union-attr]
            raise
        member.record(None)
        if permit is not None:
            await member.limiter.settle(  # type: ignore[union-attr]
                permit,
                actual_tokens=result.prompt_tokens + result.completion_tokens,
                headers=result.headers,
                status=200,
            )
        return result

    def snapshot(self) -> dict[str, Any]:
        healthy = sum(1 for m in self.members if m.breaker.state == CLOSED)
        return {
            "model": self.model,
            "healthy": healthy,
            "members": [m.snapshot() for m in self.members],
        }

    async def aclose(self) -> None:
        for member in self.members:
            await member.aclose()


class ProviderPools:
    """Pools by model name, with the client interface the engine uses (`chat(model=...)`)."""

    provider = "pool"

    def __init__(self, pools: list[ProviderPool]) -> None:
        self.pools = {p.model: p for p in pools}
        if len(self.pools) != len(pools):
            raise ValueError("two pools serve the same model")
        # The engine picks TPM accounting from the endpoint: the first member's stands for all.
        first = pools[0].members[0].config if pools else None
        self.base_url = first.base_url if first else None

    def __repr__(self) -> str:
        return f"ProviderPools({sorted(self.pools)})"

    def pool(self, model: str) -> ProviderPool:
        pool = self.pools.get(model)
        if pool is None:
            raise ProviderError(
                "not_found", message=f"no provider pool serves model {model!r}", status=404
            )
        return pool

    async def chat(self, *, model: str, messages: list[dict], **kwargs: Any) -> ChatResult:
        return await self.pool(model).chat(messages=messages, **kwargs)

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.pools[name].snapshot() for name in sorted(self.pools)]

    async def aclose(self) -> None:
        for pool in self.pools.values():
            await pool.aclose()
