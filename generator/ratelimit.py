"""Client-side rate limiting: RPM/TPM token buckets, provider header following, AIMD concurrency.

The `RateLimiter` protocol is deliberately two calls so that a shared implementation (one budget
for many worker processes, e.g. rows in Postgres) can replace `LocalRateLimiter`:

* `acquire(model=, est_tokens=)` blocks until one request of about `est_tokens` total tokens may
  be sent and returns a `Permit` (opaque to callers; an implementation may stash its own state
  in `Permit.data`);
* `settle(permit, actual_tokens=, headers=, status=, retry_after=)` is called exactly once per
  permit when the request ended: it refunds or charges the token difference (`actual_tokens`
  None means "unknown, keep the reservation"), follows the provider's `x-ratelimit-*` headers
  and `Retry-After`, and frees the concurrency slot.

Token accounting is a per-provider setting (`TokenAccounting`): OpenAI and Azure count a
request's `max_tokens` toward the TPM limit when they admit it, others count what was generated.
The engine reserves and settles tokens by it (`reserved_tokens`, `charged_tokens`), so any
`RateLimiter` budgets what the provider will count, without knowing the mode.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

from asyncio_throttle import Throttler

from generator.limit_headers import int_header, longer_than_a_minute, minute_limit, parse_reset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelLimits:
    """Per-minute limits of one model; None means unlimited (or: learn it from headers)."""

    rpm: int | None = None
    tpm: int | None = None


@dataclass
class Permit:
    """Proof that one request may be sent; hand it back to `settle`."""

    model: str
    est_tokens: int
    acquired_at: float
    data: dict[str, Any] = field(default_factory=dict)


TokenAccounting = Literal["actual", "max_tokens"]
# Hosts whose TPM limit counts `max_tokens` at admission (OpenAI; Azure OpenAI resources).
_MAX_TOKENS_HOSTS = ("api.openai.com", ".openai.azure.com", ".cognitiveservices.azure.com")


def default_accounting(base_url: str | None) -> TokenAccounting:
    """`max_tokens` for OpenAI and Azure endpoints (and no URL: the public API), else `actual`."""
    host = (urlparse(base_url).hostname or "") if base_url else "api.openai.com"
    if any(host == h.lstrip(".") or host.endswith(h) for h in _MAX_TOKENS_HOSTS):
        return "max_tokens"
    return "actual"


def reserved_tokens(
    accounting: TokenAccounting,
    prompt_tokens: int,
    expected_completion: int,
    max_tokens: int | None,
) -> int:
    """What to reserve before sending: what the provider will count, as far as known now."""
    if accounting == "max_tokens" and max_tokens is not None:
        return prompt_tokens + max_tokens
    return prompt_tokens + expected_completion


def charged_tokens(
    accounting: TokenAccounting, prompt_tokens: int, completion_tokens: int, max_tokens: int | None
) -> int:
    """What the provider counted toward its TPM limit for an admitted request."""
    if accounting == "max_tokens" and max_tokens is not None:
        return prompt_tokens + max(max_tokens, completion_tokens)
    return prompt_tokens + completion_tokens


class RateLimiter(Protocol):
    """What the engine needs from a limiter (in-process or shared across processes)."""

    async def acquire(self, *, model: str, est_tokens: int) -> Permit: ...

    async def settle(
        self,
        permit: Permit,
        *,
        actual_tokens: int | None,
        headers: Mapping[str, str] | None,
        status: int | None,
        retry_after: float | None,
    ) -> None: ...


class TokenBucket:
    """Continuous-refill bucket; the level goes negative when usage exceeded a reservation."""

    def __init__(self, per_minute: float, burst_s: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.updated = time.monotonic()
        # Total ever taken, so a stale `remaining` header can be aged by what was sent since.
        self.taken_total = 0.0

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        self.refill(now)
        amount = min(amount, self.capacity)  # an oversized request must still pass eventually
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount
        self.taken_total += amount

    def adjust(self, delta: float) -> None:
        self.level = min(self.capacity, self.level + delta)
        self.taken_total -= delta

    def follow(self, remaining: int, seen_taken_total: float, seen_at: float, now: float) -> None:
        """Lower the level to what the provider reported, aged to now (never raise it: requests
        sent earlier may reach the provider later, so a report cannot bound what is in flight)."""
        self.refill(now)
        since = self.taken_total - seen_taken_total
        estimate = remaining + (now - seen_at) * self.rate - since
        if estimate < self.level:
            self.level = estimate


class TokenEstimator:
    """Expected completion tokens per model, capped by `max_tokens`: the plain mean of the first
    completions (over-reserved tokens are lent out for a whole latency), then a moving average.
    """

    def __init__(self, *, default_completion: int = 400, alpha: float = 0.1) -> None:
        self.default_completion = default_completion
        self.alpha = alpha
        self._average: dict[str, float] = {}
        self._seen: dict[str, int] = {}

    def expected(self, model: str, max_tokens: int | None) -> int:
        average = self._average.get(model, float(self.default_completion))
        return int(average if max_tokens is None else min(average, max_tokens))

    def observe(self, model: str, completion_tokens: int) -> None:
        seen = self._seen[model] = self._seen.get(model, 0) + 1
        previous = self._average.get(model, 0.0)
        weight = max(self.alpha, 1.0 / seen)
        self._average[model] = previous + weight * (completion_tokens - previous)


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """About four characters per token plus a few per message (OpenAI's rule of thumb)."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 4 + 4 * len(messages) + 2


class _ModelState:
    def __init__(self, limits: ModelLimits, *, limiter: LocalRateLimiter) -> None:
        self.turn = asyncio.Lock()  # FIFO: the head of the queue decides, the rest wait their turn
        self.slot_freed = asyncio.Event()
        self.in_flight = 0
        self.concurrency = float(limiter.max_concurrency)
        self.last_cut_at = -math.inf
        self.paused_until = 0.0
        self.requests: TokenBucket | None = None
        self.tokens: TokenBucket | None = None
        self.throttler: Throttler | None = None
        self.learned = False
        self.configure(limits, limiter=limiter)
        # With no configured limits, send one request first and read the provider's limits
        # from its headers before opening up (avoids a burst of 429s at start).
        self.probing = limiter.learn_from_headers and self.requests is None and self.tokens is None

    def configure(self, limits: ModelLimits, *, limiter: LocalRateLimiter) -> None:
        if limits.rpm:
            rpm = limits.rpm * limiter.safety
            self.requests = TokenBucket(rpm, limiter.burst_s)
            # asyncio-throttle spreads the requests of each short window evenly, so a full
            # bucket is not fired in one instant (providers enforce sub-minute windows).
            window = limiter.smoothing_s
            self.throttler = Throttler(
                rate_limit=max(1, math.ceil(rpm / 60.0 * window)), period=window
            )
        if limits.tpm:
            self.tokens = TokenBucket(limits.tpm * limiter.safety, limiter.burst_s)


class LocalRateLimiter:
    """In-process limiter: per-model RPM/TPM buckets, header following, AIMD concurrency.

    asyncio-throttle only counts calls in a sliding window, so it serves as the RPM smoothing
    piece; token weighting, refunds, following provider headers, Retry-After pauses and AIMD
    need state it does not have, hence the hand-written buckets below.
    """

    def __init__(
        self,
        limits: Mapping[str, ModelLimits] | None = None,
        *,
        default: ModelLimits = ModelLimits(),
        max_concurrency: int = 256,
        min_concurrency: int = 1,
        decrease: float = 0.5,
        increase: float = 1.0,
        safety: float = 1.0,
        burst_s: float = 1.0,
        smoothing_s: float = 0.25,
        learn_from_headers: bool = True,
    ) -> None:
        self.limits = dict(limits or {})
        self.default = default
        self.max_concurrency = max_concurrency
        self.min_concurrency = min_concurrency
        self.decrease = decrease  # multiplicative cut on the first 429 of a burst
        self.increase = increase  # additive growth: +increase per `concurrency` successes
        # Fraction of the configured limit to aim at. 1.0: the bucket holds at most burst_s of
        # refill, lower `remaining` headers and 429s (AIMD, Retry-After) correct the rest; a
        # lower default gave away throughput the provider would have admitted.
        self.safety = safety
        self.burst_s = burst_s  # bucket capacity in seconds of refill
        self.smoothing_s = smoothing_s
        self.learn_from_headers = learn_from_headers
        self._states: dict[str, _ModelState] = {}
        self._ids = itertools.count()
        self.stats = {"acquired": 0, "rate_limited": 0, "cuts": 0}

    def _state(self, model: str) -> _ModelState:
        state = self._states.get(model)
        if state is None:
            state = _ModelState(self.limits.get(model, self.default), limiter=self)
            self._states[model] = state
        return state

    def concurrency(self, model: str) -> float:
        """Currently allowed concurrent requests for `model` (AIMD state)."""
        return self._state(model).concurrency

    # The engine may pass `estimate=`: re-evaluated when the request reaches the head of the
    # queue, so requests queued behind many others reserve with what was learned meanwhile.
    fresh_estimates = True

    async def acquire(
        self, *, model: str, est_tokens: int, estimate: Callable[[], int] | None = None
    ) -> Permit:
        """Wait for a concurrency slot, the pause to end, and room in both buckets."""
        state = self._state(model)
        async with state.turn:
            while True:
                if estimate is not None:
                    est_tokens = estimate()
                now = time.monotonic()
                wait = max(0.0, state.paused_until - now)
                if state.requests is not None:
                    wait = max(wait, state.requests.wait_for(1, now))
                if state.tokens is not None:
                    wait = max(wait, state.tokens.wait_for(est_tokens, now))
                allowed = 1 if state.probing else max(self.min_concurrency, int(state.concurrency))
                if state.in_flight >= allowed:
                    state.slot_freed.clear()
                    try:
                        await asyncio.wait_for(state.slot_freed.wait(), timeout=1.0)
                    except TimeoutError:
                        pass
                    continue
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                break
            if state.throttler is not None:
                await state.throttler.acquire()
            now = time.monotonic()
            permit = Permit(model=model, est_tokens=est_tokens, acquired_at=now)
            if state.requests is not None:
                state.requests.refill(now)
                state.requests.take(1)
                permit.data["requests_seen"] = state.requests.taken_total
            if state.tokens is not None:
                state.tokens.refill(now)
                state.tokens.take(est_tokens)
                permit.data["tokens_seen"] = state.tokens.taken_total
            state.in_flight += 1
            permit.data["id"] = next(self._ids)
            self.stats["acquired"] += 1
            return permit

    async def settle(
        self,
        permit: Permit,
        *,
        actual_tokens: int | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Refund/charge tokens, follow headers, pause on Retry-After, adapt concurrency."""
        state = self._state(permit.model)
        now = time.monotonic()
        state.in_flight = max(0, state.in_flight - 1)
        state.probing = False
        state.slot_freed.set()
        if actual_tokens is not None and state.tokens is not None:
            state.tokens.adjust(permit.est_tokens - actual_tokens)
            # The provider's `remaining` already counts this request's actual tokens.
            if "tokens_seen" in permit.data:
                permit.data["tokens_seen"] += actual_tokens - permit.est_tokens
        if headers:
            self._follow_headers(state, permit, headers, now)
        if retry_after is not None and retry_after > 0:
            state.paused_until = max(state.paused_until, now + retry_after)
        if status == 429:
            self.stats["rate_limited"] += 1
            # Only the first 429 of a burst cuts: later ones were sent before the cut took effect.
            if permit.acquired_at > state.last_cut_at:
                state.concurrency = max(
                    float(self.min_concurrency),
                    min(state.concurrency, state.in_flight + 1) * self.decrease,
                )
                state.last_cut_at = now
                self.stats["cuts"] += 1
                log.info(
                    "rate_limit_cut model=%s concurrency=%.1f retry_after=%s",
                    permit.model,
                    state.concurrency,
                    retry_after,
                )
        elif status is not None and status < 400:
            state.concurrency = min(
                float(self.max_concurrency), state.concurrency + self.increase / state.concurrency
            )

    def _follow_headers(
        self, state: _ModelState, permit: Permit, headers: Mapping[str, str], now: float
    ) -> None:
        if self.learn_from_headers and state.requests is None and state.tokens is None:
            rpm = minute_limit(headers, "requests")
            tpm = minute_limit(headers, "tokens")
            if rpm or tpm:
                state.configure(ModelLimits(rpm=rpm, tpm=tpm), limiter=self)
                state.learned = True
                log.info("rate_limit_learned model=%s rpm=%s tpm=%s", permit.model, rpm, tpm)
                return
        for bucket, kind, seen_key in (
            (state.requests, "requests", "requests_seen"),
            (state.tokens, "tokens", "tokens_seen"),
        ):
            remaining = int_header(headers, f"x-ratelimit-remaining-{kind}")
            if bucket is None or remaining is None or seen_key not in permit.data:
                continue
            if longer_than_a_minute(headers, kind):  # a daily limit's count (Groq)
                continue
            bucket.follow(remaining, permit.data[seen_key], permit.acquired_at, now)
            if remaining <= 0:
                reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
                if reset:
                    state.paused_until = max(state.paused_until, permit.acquired_at + reset)
