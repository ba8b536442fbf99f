"""Rate limiter benchmark against the LLM simulator.

1. Limited: simulator with RPM=3,000, TPM=600,000 and log-normal latency (median 1.5 s, p99 5 s).
   Many workers generate stories through StoryEngine (limiter + client + retries) for the
   window; achieved/limit is the utilisation of the binding limit (max of requests and tokens),
   counted by send time inside the window; rate429 = 429 answers / requests; lost = stories
   started in the window that ended without a text.
   In the same run, a naive baseline (sequential requests, sleeping 60/RPM between them)
   against its own simulator with the same limits and latency.
2. Client ceiling: simulator in its own process with zero latency and no limits; requests
   per second one client process sustains through the same engine path.

Last line: `ratelimit: achieved_over_limit=X rate429=Y lost=Z ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from contextvars import ContextVar
from datetime import UTC, datetime

from generator.checks import StoryChecker
from generator.client import ChatClient
from generator.engine import RequestRecord, StoryEngine
from generator.pricing import PriceTable
from generator.ratelimit import LocalRateLimiter, ModelLimits, Permit
from generator.retry import RetryPolicy
from generator.simulator import SimulatorConfig, run_simulator
from vocab import RecipeSampler

RPM, TPM = 3000, 600_000
MODEL = "simulator-story-1"


def limited_config(seed: int) -> SimulatorConfig:
    return SimulatorConfig(
        rpm=RPM, tpm=TPM, latency_median_s=1.5, latency_p99_s=5.0, seed=seed, burst_s=2.0
    )


def make_engine(url: str, limiter: object, sink: list[RequestRecord]) -> StoryEngine:
    async def on_request(record: RequestRecord) -> None:
        sink.append(record)

    return StoryEngine(
        client=ChatClient(base_url=url, api_key="bench", provider="simulator", timeout_s=30),
        limiter=limiter,
        pricing=PriceTable.load(),
        retry=RetryPolicy(max_attempts=6, base_s=0.5, max_s=8.0),
        checker=StoryChecker(),
        on_request=on_request,
    )


def utilisation(records: list[RequestRecord], t0: datetime, window_s: float) -> tuple[float, float]:
    """(requests/limit, tokens/limit) over records sent inside the window that were admitted."""
    inside = [
        r
        for r in records
        if r.status != 429 and 0 <= (r.started_at - t0).total_seconds() < window_s
    ]
    rps = len(inside) / window_s
    tps = sum(r.prompt_tokens + r.completion_tokens for r in inside) / window_s
    return rps / (RPM / 60), tps / (TPM / 60)


# Whether the current worker's story has sent its first request (per task).
_story_sent: ContextVar[bool] = ContextVar("story_sent", default=False)


class WindowClosed(Exception):
    """A story still queued in the limiter when the window ended: never sent, not counted."""


class WindowedLimiter:
    """Lets retries of sent stories through after the window, refuses new stories."""

    def __init__(self, inner: LocalRateLimiter, deadline: float) -> None:
        self.inner = inner
        self.deadline = deadline

    async def acquire(self, *, model: str, est_tokens: int) -> Permit:
        permit = await self.inner.acquire(model=model, est_tokens=est_tokens)
        if not _story_sent.get() and time.monotonic() >= self.deadline:
            await self.inner.settle(
                permit, actual_tokens=0, headers=None, status=None, retry_after=None
            )
            raise WindowClosed
        _story_sent.set(True)
        return permit

    async def settle(self, permit: Permit, **kwargs: object) -> None:
        await self.inner.settle(permit, **kwargs)


async def run_limited(url: str, window_s: float, drain_s: float, workers: int) -> dict:
    records: list[RequestRecord] = []
    limiter = LocalRateLimiter({MODEL: ModelLimits(rpm=RPM, tpm=TPM)}, max_concurrency=workers)
    deadline = time.monotonic() + window_s
    engine = make_engine(url, WindowedLimiter(limiter, deadline), records)
    sampler = RecipeSampler()
    counter = iter(range(10**9))
    started_stories = finished_ok = failed = 0
    t0 = datetime.now(UTC)

    async def worker() -> None:
        nonlocal started_stories, finished_ok, failed
        while time.monotonic() < deadline:
            _story_sent.set(False)
            try:
                outcome = await engine.story(sampler.recipe(7, next(counter)), model=MODEL)
            except WindowClosed:
                return
            except asyncio.CancelledError:
                if _story_sent.get():
                    started_stories += 1  # sent but not finished by the drain deadline: lost
                raise
            started_stories += 1
            if outcome.text:
                finished_ok += 1
            else:
                failed += 1

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await asyncio.sleep(window_s)
    _done, pending = await asyncio.wait(tasks, timeout=drain_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await engine.client.aclose()
    req_util, tok_util = utilisation(records, t0, window_s)
    n429 = sum(1 for r in records if r.status == 429)
    return {
        "req_util": req_util,
        "tok_util": tok_util,
        "achieved": max(req_util, tok_util),
        "rate429": n429 / max(1, len(records)),
        "requests": len(records),
        "stories": started_stories,
        "lost": started_stories - finished_ok,
        "failed": failed,
        "unfinished": len(pending),
        "cuts": limiter.stats["cuts"],
    }


async def run_baseline(url: str, window_s: float) -> dict:
    """Sequential requests, sleeping 60/RPM between them (what a naive script does)."""
    records: list[RequestRecord] = []
    # An unlimited limiter: the baseline's only pacing is its sleep.
    engine = make_engine(url, LocalRateLimiter(), records)
    sampler = RecipeSampler()
    t0 = datetime.now(UTC)
    deadline = time.monotonic() + window_s
    i = 0
    while time.monotonic() < deadline:
        await engine.story(sampler.recipe(11, i), model=MODEL)
        i += 1
        await asyncio.sleep(60 / RPM)
    await engine.client.aclose()
    req_util, tok_util = utilisation(records, t0, window_s)
    return {"achieved": max(req_util, tok_util), "requests": len(records)}


async def all_phases(
    urls: tuple[str, str, str], window_s: float, drain_s: float, workers: int, ceiling_s: float
) -> tuple[dict, dict, tuple[float, float]]:
    """Limited run and baseline side by side; the ceiling starts when their window closes
    (only the latency tail of the limited run is still in flight then)."""

    async def ceiling_after_window() -> tuple[float, float]:
        await asyncio.sleep(window_s + 0.5)
        return await client_ceiling(urls[2], ceiling_s, concurrency=64)

    return await asyncio.gather(
        run_limited(urls[0], window_s, drain_s, workers),
        run_baseline(urls[1], window_s),
        ceiling_after_window(),
    )


async def client_ceiling(url: str, seconds: float, concurrency: int) -> tuple[float, float]:
    """(requests per second, client CPU milliseconds per request)."""
    records: list[RequestRecord] = []
    engine = make_engine(url, LocalRateLimiter(max_concurrency=concurrency), records)
    messages = [{"role": "user", "content": "Once upon a time, there was a little dog."}]
    deadline = time.monotonic() + seconds
    warm_until = time.monotonic() + min(1.0, seconds / 4)
    counted = 0
    counting_start = cpu_start = 0.0

    async def worker() -> None:
        nonlocal counted, counting_start, cpu_start
        while time.monotonic() < deadline:
            await engine.chat("story", model=MODEL, messages=messages, max_tokens=64)
            now = time.monotonic()
            if now >= warm_until:
                if counting_start == 0.0:
                    counting_start, cpu_start = now, time.process_time()
                counted += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - cpu_start
    elapsed = time.monotonic() - counting_start
    await engine.client.aclose()
    return counted / max(1e-9, elapsed), 1000 * cpu / max(1, counted)


def run(coro: Coroutine) -> object:
    """uvloop when installed: the client's event loop is part of what is measured."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 s window (< 45 s in all)")
    parser.add_argument("--window", type=float, default=None, help="seconds (default 60)")
    parser.add_argument("--workers", type=int, default=256)
    args = parser.parse_args()
    window = args.window or (30.0 if args.quick else 60.0)
    drain = 10.0 if args.quick else 20.0  # the latency tail: p99 is 5 s
    ceiling_s = 4.0 if args.quick else 10.0
    gc.freeze()  # long-lived imports out of the collector's way

    start = time.monotonic()
    configs = [limited_config(seed=1), limited_config(seed=2), SimulatorConfig(seed=3)]
    # Start the three simulators in parallel (each is its own process), stop them before
    # printing so the headline stays the last line.
    with ExitStack() as stack, ThreadPoolExecutor(len(configs)) as pool:
        futures = [
            pool.submit(stack.enter_context, run_simulator(c, subprocess_mode=True))
            for c in configs
        ]
        urls = tuple(f.result() for f in futures)
        phases = all_phases(urls, window, drain, args.workers, ceiling_s)
        ours, baseline, (rps, cpu_ms) = run(phases)
    print(
        f"limited: window={window:g}s requests={ours['requests']} stories={ours['stories']} "
        f"req_util={ours['req_util']:.3f} tok_util={ours['tok_util']:.3f} "
        f"rate429={ours['rate429']:.4f} failed={ours['failed']} "
        f"unfinished={ours['unfinished']} aimd_cuts={ours['cuts']}"
    )
    print(
        f"baseline (sequential, sleep 60/RPM): requests={baseline['requests']} "
        f"achieved_over_limit={baseline['achieved']:.4f}"
    )
    ratio = ours["achieved"] / baseline["achieved"] if baseline["achieved"] else float("inf")
    print(f"ours/baseline throughput ratio: {ratio:.1f}x")
    print(
        f"client ceiling: {rps:.0f} req/s from one client process (zero latency, no limits); "
        f"client CPU {cpu_ms:.2f} ms/request = {1000 / cpu_ms:.0f} req/s per core"
    )
    print(f"total {time.monotonic() - start:.1f}s")
    print(
        f"ratelimit: achieved_over_limit={ours['achieved']:.3f} rate429={ours['rate429']:.4f} "
        f"lost={ours['lost']} baseline_over_limit={baseline['achieved']:.4f} "
        f"ratio_vs_baseline={ratio:.1f} client_rps={rps:.0f} "
        f"client_rps_per_core={1000 / cpu_ms:.0f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
