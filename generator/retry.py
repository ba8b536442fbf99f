"""Retry policy: bounded attempts, exponential backoff with jitter, Retry-After honoured."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from generator.errors import ProviderError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one request is retried."""

    max_attempts: int = 6
    base_s: float = 0.5  # first backoff; doubles per attempt
    max_s: float = 30.0  # cap of the exponential part
    jitter: float = 0.5  # up to this many seconds added at random, so clients do not sync up
    max_retry_after_s: float = 300.0  # a longer Retry-After is not worth waiting for

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_s < 0 or self.max_s < 0 or self.jitter < 0:
            raise ValueError("backoff times must be >= 0")

    def should_retry(self, exc: BaseException) -> bool:
        """Retry only classified retryable failures whose Retry-After is not absurd."""
        if not isinstance(exc, ProviderError) or not exc.retryable:
            return False
        return exc.retry_after is None or exc.retry_after <= self.max_retry_after_s

    def wait_s(self, retry_state: RetryCallState) -> float:
        """max(exponential backoff with jitter, the provider's Retry-After)."""
        backoff = wait_exponential_jitter(
            multiplier=self.base_s, max=self.max_s, jitter=self.jitter
        )(retry_state)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = exc.retry_after if isinstance(exc, ProviderError) else None
        return max(backoff, retry_after or 0.0)

    def retrying(
        self, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> AsyncRetrying:
        """A tenacity controller; the last exception is re-raised when attempts run out."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self.wait_s,
            retry=retry_if_exception(self.should_retry),
            reraise=True,
            sleep=sleep,
        )

    async def run(
        self,
        attempt_fn: Callable[[int], Awaitable[T]],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> T:
        """Call `attempt_fn(attempt_number)` (1-based) until it succeeds or the policy gives up."""
        async for attempt in self.retrying(sleep=sleep):
            with attempt:
                return await attempt_fn(attempt.retry_state.attempt_number)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
