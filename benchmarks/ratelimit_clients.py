"""The rate-limit clients a user would pick instead of ours, written here from their documented
behaviour (no code copied), for `bench_ratelimit.py`.

* `CuratorStyleClient`: how Bespoke Curator's online request processor limits: a token bucket
  for RPM and one for TPM that start empty and refill at limit/60 per second up to one minute's
  worth; a request reserves its prompt plus the output expected from the last completions;
  when it ends, the reservation minus what was used is given back; after a 429 every new
  request waits `pause_after_429_s`.
* `CookbookStyleClient`: the OpenAI cookbook's `api_request_parallel_processor.py` logic: the
  buckets start full (one minute's worth), a request is charged its prompt plus `max_tokens`,
  nothing is given back; after a 429 every new request waits 15 s; a failed request is retried
  up to 5 attempts; the dispatch loop sleeps 1 ms per turn.

Both send through our `ChatClient` (same HTTP path as ours) and estimate prompt tokens with the
same rule of thumb as ours, so only the limiting logic differs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator

from generator.client import ChatClient
from generator.errors import ProviderError
from generator.ratelimit import estimate_prompt_tokens


class _Buckets:
    """Requests and tokens refilled at limit/60 per second, holding at most one minute's worth."""

    def __init__(self, rpm: int, tpm: int, *, full: bool) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.requests = float(rpm) if full else 0.0
        self.tokens = float(tpm) if full else 0.0
        self.updated = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        elapsed, self.updated = now - self.updated, now
        self.requests = min(self.rpm, self.requests + elapsed * self.rpm / 60.0)
        self.tokens = min(self.tpm, self.tokens + elapsed * self.tpm / 60.0)

    def try_take(self, tokens: int) -> bool:
        self.refill()
        if self.requests >= 1 and self.tokens >= tokens:
            self.requests -= 1
            self.tokens -= tokens
            return True
        return False

    def wait_s(self, tokens: int) -> float:
        missing_r = max(0.0, 1 - self.requests) / (self.rpm / 60.0)
        missing_t = max(0.0, tokens - self.tokens) / (self.tpm / 60.0)
        return max(missing_r, missing_t)


class _Client:
    """Shared dispatch: a stream of prompts, retries first, one task per request."""

    def __init__(
        self, client: ChatClient, prompts: Iterator[list[dict]], *, model: str, max_tokens: int
    ) -> None:
        self.client = client
        self.prompts = prompts
        self.model = model
        self.max_tokens = max_tokens
        self.retries: deque[tuple[list[dict], int]] = deque()
        self.tasks: set[asyncio.Task] = set()
        self.pause_until = 0.0
        self.stats = {"sent": 0, "ok": 0, "rate_limited": 0, "other_errors": 0}

    def next_request(self) -> tuple[list[dict], int]:
        return self.retries.popleft() if self.retries else (next(self.prompts), 1)

    def spawn(self, messages: list[dict], attempt: int, reserved: int) -> None:
        task = asyncio.create_task(self.send(messages, attempt, reserved))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def send(self, messages: list[dict], attempt: int, reserved: int) -> None:
        self.stats["sent"] += 1
        try:
            result = await self.client.chat(
                model=self.model, messages=messages, max_tokens=self.max_tokens
            )
        except ProviderError as exc:
            if exc.status == 429:
                self.stats["rate_limited"] += 1
            else:
                self.stats["other_errors"] += 1
            self.failed(messages, attempt, reserved, exc)
            return
        self.stats["ok"] += 1
        self.succeeded(reserved, result.prompt_tokens, result.completion_tokens)

    def failed(self, messages: list[dict], attempt: int, reserved: int, exc: ProviderError) -> None:
        raise NotImplementedError

    def succeeded(self, reserved: int, prompt_tokens: int, completion_tokens: int) -> None:
        """Nothing by default (the cookbook gives nothing back)."""

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()


class CuratorStyleClient(_Client):
    """Buckets start empty; output expected from the last completions; refunds; 429 pause."""

    pause_after_429_s = 10.0
    recent = 100  # completions the output estimate averages over

    def __init__(
        self,
        client: ChatClient,
        prompts: Iterator[list[dict]],
        *,
        model: str,
        max_tokens: int,
        rpm: int,
        tpm: int,
        first_output_estimate: int,
    ) -> None:
        super().__init__(client, prompts, model=model, max_tokens=max_tokens)
        self.buckets = _Buckets(rpm, tpm, full=False)
        self.outputs: deque[int] = deque(maxlen=self.recent)
        # Before any completion: the same first guess as ours, so start-up compares buckets.
        self.first_output_estimate = first_output_estimate

    def expected_output(self) -> int:
        if not self.outputs:
            return min(self.first_output_estimate, self.max_tokens)
        return int(sum(self.outputs) / len(self.outputs))

    async def run(self) -> None:
        pending: tuple[list[dict], int] | None = None
        self.buckets.updated = time.monotonic()  # empty when the run starts
        while True:
            wait = self.pause_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if pending is None:
                pending = self.next_request()
            messages, attempt = pending
            reserved = estimate_prompt_tokens(messages) + self.expected_output()
            if self.buckets.try_take(reserved):
                self.spawn(messages, attempt, reserved)
                pending = None
            else:  # sleep until the buckets hold enough (Curator polls; this is kinder to it)
                await asyncio.sleep(max(0.001, self.buckets.wait_s(reserved)))

    def succeeded(self, reserved: int, prompt_tokens: int, completion_tokens: int) -> None:
        self.outputs.append(completion_tokens)
        self.buckets.refill()
        used = prompt_tokens + completion_tokens
        self.buckets.tokens = min(self.buckets.tpm, self.buckets.tokens + reserved - used)

    def failed(self, messages: list[dict], attempt: int, reserved: int, exc: ProviderError) -> None:
        self.buckets.refill()
        used = exc.prompt_tokens + exc.completion_tokens
        self.buckets.tokens = min(self.buckets.tpm, self.buckets.tokens + reserved - used)
        if exc.status == 429:
            self.pause_until = max(self.pause_until, time.monotonic() + self.pause_after_429_s)
        self.retries.append((messages, attempt + 1))


class CookbookStyleClient(_Client):
    """Buckets start full; prompt + max_tokens charged, never refunded; 15 s pause after a 429."""

    pause_after_429_s = 15.0
    max_attempts = 5
    loop_sleep_s = 0.001

    def __init__(
        self,
        client: ChatClient,
        prompts: Iterator[list[dict]],
        *,
        model: str,
        max_tokens: int,
        rpm: int,
        tpm: int,
    ) -> None:
        super().__init__(client, prompts, model=model, max_tokens=max_tokens)
        self.buckets = _Buckets(rpm, tpm, full=True)
        self.last_429 = -1e9

    async def run(self) -> None:
        pending: tuple[list[dict], int] | None = None
        while True:
            if pending is None:
                pending = self.next_request()
            messages, attempt = pending
            cost = estimate_prompt_tokens(messages) + self.max_tokens
            if self.buckets.try_take(cost):
                self.spawn(messages, attempt, cost)
                pending = None
            await asyncio.sleep(self.loop_sleep_s)
            since_429 = time.monotonic() - self.last_429
            if since_429 < self.pause_after_429_s:
                await asyncio.sleep(self.pause_after_429_s - since_429)

    def failed(self, messages: list[dict], attempt: int, reserved: int, exc: ProviderError) -> None:
        if exc.status == 429:
            self.last_429 = time.monotonic()
        if attempt < self.max_attempts:
            self.retries.append((messages, attempt + 1))
