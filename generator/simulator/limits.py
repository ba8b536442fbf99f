"""Server-side RPM/TPM enforcement with OpenAI-style `x-ratelimit-*` headers.

Each model has a requests bucket and a tokens bucket refilled continuously at limit/60 per
second, holding at most `burst_s` seconds of refill (providers enforce sub-minute windows).
A request is charged its prompt tokens plus, by `token_accounting`, the completion it will get
("actual") or its `max_tokens` ("max_tokens", as OpenAI and Azure count at admission, never
refunded); a 429 charges nothing. Admissions are also counted per `TIMELINE_BIN_S` of the
simulator's clock, so a benchmark can count what the provider admitted in any window.
`ServerCapacity` is the slow-server mode: generation speed, concurrent slots and a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

from generator.simulator.config import SimulatorConfig

TIMELINE_BIN_S = 0.1
_TIMELINE_KEEP_BINS = 36_000  # one hour of bins; older ones are dropped


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


class _Bucket:
    __slots__ = ("capacity", "level", "limit", "rate", "updated")

    def __init__(self, limit: int, burst_s: float) -> None:
        self.limit = limit
        self.rate = limit / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.updated = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)

    def wait_s(self, amount: float) -> float:
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)


class ServerLimits:
    """Per-model buckets; `check` decides 200 or 429 and returns the headers for either."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.rpm = config.rpm
        self.tpm = config.tpm
        self.burst_s = config.burst_s
        self.accounting = config.token_accounting
        self._buckets: dict[str, tuple[_Bucket | None, _Bucket | None]] = {}
        self.rejected = 0
        self.admitted = 0
        self.charged_tokens = 0
        # bin index (monotonic seconds / TIMELINE_BIN_S) -> [admitted, charged tokens, rejected]
        self.timeline: dict[int, list[int]] = {}

    def charge(self, prompt_tokens: int, completion_tokens: int, max_tokens: int | None) -> int:
        """Tokens one request counts against TPM under this simulator's accounting."""
        if self.accounting == "max_tokens" and max_tokens is not None:
            return prompt_tokens + max(max_tokens, completion_tokens)
        return prompt_tokens + completion_tokens

    def _count(self, now: float, admitted: bool, tokens: int) -> None:
        index = int(now / TIMELINE_BIN_S)
        counts = self.timeline.get(index)
        if counts is None:
            if len(self.timeline) >= _TIMELINE_KEEP_BINS:
                oldest = index - _TIMELINE_KEEP_BINS // 2
                for key in [k for k in self.timeline if k < oldest]:
                    del self.timeline[key]
            counts = self.timeline[index] = [0, 0, 0]
        if admitted:
            counts[0] += 1
            counts[1] += tokens
        else:
            counts[2] += 1

    def timeline_since(self, since: float) -> list[list[int]]:
        """[bin index, admitted, charged tokens, rejected] for bins starting at or after `since`."""
        first = int(since / TIMELINE_BIN_S)
        return [[k, *v] for k, v in sorted(self.timeline.items()) if k >= first]

    @property
    def enabled(self) -> bool:
        return bool(self.rpm or self.tpm)

    def _for(self, model: str) -> tuple[_Bucket | None, _Bucket | None]:
        buckets = self._buckets.get(model)
        if buckets is None:
            buckets = (
                _Bucket(self.rpm, self.burst_s) if self.rpm else None,
                _Bucket(self.tpm, self.burst_s) if self.tpm else None,
            )
            self._buckets[model] = buckets
        return buckets

    def peek(self, model: str) -> dict[str, str]:
        """The headers for an answer that charges nothing (errors before admission)."""
        return self._headers(model, time.monotonic())

    def _headers(self, model: str, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        if not self.enabled:
            return headers
        for bucket, kind in zip(self._for(model), ("requests", "tokens"), strict=True):
            if bucket is None:
                continue
            bucket.refill(now)
            # The limit is per minute; `remaining` is what may be sent right now.
            headers[f"x-ratelimit-limit-{kind}"] = str(bucket.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = format_duration(bucket.reset_s())
        return headers

    def check(self, model: str, tokens: int) -> tuple[bool, float, dict[str, str]]:
        """(admitted, retry_after_s, headers) for one request costing `tokens`."""
        if not self.enabled:
            return True, 0.0, {}
        now = time.monotonic()
        requests, token_bucket = self._for(model)
        wait = 0.0
        for bucket, amount in ((requests, 1.0), (token_bucket, float(tokens))):
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait_s(amount))
        admitted = wait <= 0.0
        self._count(now, admitted, tokens)
        if admitted:
            self.admitted += 1
            self.charged_tokens += tokens
            if requests is not None:
                requests.level -= 1
            if token_bucket is not None:
                token_bucket.level -= min(tokens, token_bucket.capacity)
        else:
            self.rejected += 1
        headers = self._headers(model, now)
        if not admitted:
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        return admitted, wait, headers


class ServerCapacity:
    """Slow-server mode: `capacity` requests generate at once, each at `tokens_per_s`; the rest
    queue in arrival order. Work is never dropped: an answer whose client has gone by the time
    it is ready counts as abandoned (the server did it for nobody)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.tokens_per_s = config.tokens_per_s
        self.capacity = config.capacity
        # asyncio.Semaphore wakes waiters first come, first served (binds its loop on first use).
        self._slots = asyncio.Semaphore(config.capacity) if config.capacity else None
        self.busy = 0
        self.queued = 0
        self.max_queued = 0
        self.completed = 0
        self.abandoned = 0
        self.abandoned_tokens = 0
        self.completion_tokens = 0

    @property
    def enabled(self) -> bool:
        return bool(self.tokens_per_s or self.capacity)

    def generation_s(self, completion_tokens: int) -> float:
        """Seconds to generate `completion_tokens` once the request has a slot."""
        return completion_tokens / self.tokens_per_s if self.tokens_per_s else 0.0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the server's generation slots (waiting in the queue for it)."""
        if self._slots is None:
            self.busy += 1
            try:
                yield
            finally:
                self.busy -= 1
            return
        self.queued += 1
        self.max_queued = max(self.max_queued, self.queued)
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self._slots.release()

    def finished(self, completion_tokens: int, *, client_gone: bool) -> None:
        self.completed += 1
        self.completion_tokens += completion_tokens
        if client_gone:
            self.abandoned += 1
            self.abandoned_tokens += completion_tokens

    def stats(self) -> dict[str, float | int | None]:
        return {
            "tokens_per_s": self.tokens_per_s,
            "capacity": self.capacity,
            "busy": self.busy,
            "queued": self.queued,
            "max_queued": self.max_queued,
            "completed": self.completed,
            "abandoned": self.abandoned,
            "abandoned_tokens": self.abandoned_tokens,
            "completion_tokens": self.completion_tokens,
        }
