"""RetryPolicy: backoff, Retry-After, bounded attempts, terminal errors."""

from __future__ import annotations

import pytest

from generator.errors import ProviderError
from generator.retry import RetryPolicy


class Flaky:
    def __init__(self, errors: list[ProviderError]) -> None:
        self.errors = list(errors)
        self.calls: list[int] = []

    async def __call__(self, attempt: int) -> str:
        self.calls.append(attempt)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def recorder() -> tuple[list[float], object]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return waits, sleep


async def test_exponential_backoff_with_bounded_jitter() -> None:
    waits, sleep = recorder()
    policy = RetryPolicy(max_attempts=5, base_s=1.0, max_s=3.0, jitter=0.5)
    fn = Flaky([ProviderError("server_error", status=500)] * 4)
    assert await policy.run(fn, sleep=sleep) == "ok"
    assert fn.calls == [1, 2, 3, 4, 5]
    assert len(waits) == 4
    for wait, base in zip(waits, (1.0, 2.0, 3.0, 3.0), strict=True):
        assert base <= wait <= base + 0.5


async def test_retry_after_is_honoured() -> None:
    waits, sleep = recorder()
    policy = RetryPolicy(max_attempts=3, base_s=0.1, jitter=0.0)
    fn = Flaky([ProviderError("rate_limit", status=429, retry_after=7.5)])
    assert await policy.run(fn, sleep=sleep) == "ok"
    assert waits == [7.5]


async def test_exhausted_raises_last_error() -> None:
    _waits, sleep = recorder()
    policy = RetryPolicy(max_attempts=3, base_s=0.0, jitter=0.0)
    errors = [ProviderError("timeout"), ProviderError("connection"), ProviderError("timeout")]
    fn = Flaky([*errors, ProviderError("timeout")])
    with pytest.raises(ProviderError) as info:
        await policy.run(fn, sleep=sleep)
    assert fn.calls == [1, 2, 3] and info.value.error_class == "timeout"


async def test_terminal_errors_and_absurd_retry_after_are_not_retried() -> None:
    waits, sleep = recorder()
    policy = RetryPolicy(max_attempts=5, max_retry_after_s=60)
    for error in (
        ProviderError("auth", status=401),
        ProviderError("content_filter", status=400),
        ProviderError("rate_limit", status=429, retry_after=3600),
    ):
        fn = Flaky([error])
        with pytest.raises(ProviderError):
            await policy.run(fn, sleep=sleep)
        assert fn.calls == [1]
    assert waits == []


def test_policy_validates() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="unknown provider error class"):
        ProviderError("weird")
