"""Rate limiter benchmark: ours and the clients a user would pick instead, counted at the provider.

Conditions: simulator RPM=3,000, TPM=600,000, burst 2 s, log-normal latency (median 1.5 s,
p99 5 s); stories with `max_tokens=1024`. Three clients run side by side, each in its own child
process of this one (so one's bursts cannot stall another's event loop) against its own simulator
process with the same config and seed, started together:

* ours: `StoryEngine` + `LocalRateLimiter` (what `generator` and the CLI use), 256 workers;
* Curator-style and OpenAI-cookbook-style clients (`ratelimit_clients.py`).

Every figure is counted AT THE SIMULATOR from its own per-0.1 s admission counters
(`/v1/simulator/stats?since=`): admitted requests and charged tokens per second over the limit
(the larger of the two), separately for the first 5 s (start-up) and from 5 s to the end of the
window (steady state); rate429 = rejected / (admitted + rejected) over the whole window.
Both token-accounting modes run in turn: `actual` (prompt + generated tokens) and `max_tokens`
(prompt + `max_tokens` at admission, as OpenAI and Azure count); ours is told the mode as a
user configures it for the provider (the default for OpenAI and Azure endpoints).

Last lines, one per mode (max_tokens last):
`ratelimit: ours_steady=X curator_steady=Y cookbook_steady=Z ours_first5s=A curator_first5s=B
rate429=R mode=actual|max_tokens`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack

import httpx
from ratelimit_clients import CookbookStyleClient, CuratorStyleClient

from generator.checks import StoryChecker
from generator.client import ChatClient
from generator.engine import StoryEngine
from generator.pricing import PriceTable
from generator.prompts import DEFAULT_TEMPLATE_VERSION, render_story_prompt
from generator.ratelimit import LocalRateLimiter, ModelLimits, TokenEstimator
from generator.retry import RetryPolicy
from generator.simulator import SimulatorConfig, run_simulator
from vocab import RecipeSampler

RPM, TPM = 3000, 600_000
MODEL = "simulator-story-1"
MAX_TOKENS = 1024
START_S = 5.0  # the start-up window
CLIENTS = ("ours", "curator", "cookbook")
MODES = ("actual", "max_tokens")


def sim_config(mode: str) -> SimulatorConfig:
    return SimulatorConfig(
        rpm=RPM,
        tpm=TPM,
        burst_s=2.0,
        latency_median_s=1.5,
        latency_p99_s=5.0,
        seed=1,
        token_accounting=mode,
    )


def chat_client(url: str) -> ChatClient:
    return ChatClient(base_url=url, api_key="bench", provider="simulator", timeout_s=30)


def prompts(seed: int) -> Iterator[list[dict]]:
    """The same story prompts, in the same order, for every client."""
    sampler = RecipeSampler()
    for i in itertools.count():
        text = render_story_prompt(sampler.recipe(seed, i), DEFAULT_TEMPLATE_VERSION)
        yield [{"role": "user", "content": text}]


def ours(url: str, mode: str, workers: int) -> Coroutine:
    """Built (and its story checker warmed) before the window: a one-off process start-up cost."""
    limiter = LocalRateLimiter({MODEL: ModelLimits(rpm=RPM, tpm=TPM)}, max_concurrency=workers)
    checker = StoryChecker()
    # The first check loads lemminflect's tables (1-3 s of CPU that would stall the event loop
    # in the first seconds of the window; that is the checker's start-up, not the limiter's).
    checker.check("A dog ran.", finish_reason="stop", required_words=["dog"])
    engine = StoryEngine(
        client=chat_client(url),
        limiter=limiter,
        pricing=PriceTable.load(),
        retry=RetryPolicy(max_attempts=6, base_s=0.5, max_s=8.0),
        checker=checker,
        accounting=mode,  # type: ignore[arg-type]
    )
    sampler = RecipeSampler()
    counter = itertools.count()

    async def worker() -> None:
        while True:
            await engine.story(sampler.recipe(7, next(counter)), model=MODEL, max_tokens=MAX_TOKENS)

    async def run_workers() -> None:
        tasks = [asyncio.create_task(worker()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await engine.client.aclose()

    return run_workers()


async def run_baseline(client: CuratorStyleClient | CookbookStyleClient) -> None:
    try:
        await client.run()
    finally:
        await client.stop()


def make_client(name: str, url: str, mode: str, workers: int) -> Coroutine:
    if name == "ours":
        return ours(url, mode, workers)
    if name == "curator":
        return run_baseline(
            CuratorStyleClient(
                chat_client(url),
                prompts(7),
                model=MODEL,
                max_tokens=MAX_TOKENS,
                rpm=RPM,
                tpm=TPM,
                first_output_estimate=TokenEstimator().default_completion,
            )
        )
    return run_baseline(
        CookbookStyleClient(
            chat_client(url), prompts(7), model=MODEL, max_tokens=MAX_TOKENS, rpm=RPM, tpm=TPM
        )
    )


async def sim_stats(http: httpx.AsyncClient, url: str, since: float | None = None) -> dict:
    params = {} if since is None else {"since": since}
    response = await http.get(url.removesuffix("/v1") + "/v1/simulator/stats", params=params)
    response.raise_for_status()
    return response.json()


def at_simulator(stats: dict, t0: float, window_s: float) -> dict:
    """Utilisation (max of requests and tokens over their limits) in the two windows, and 429s."""
    bin_s = stats["timeline"]["bin_s"]
    sums = {"first": [0, 0], "steady": [0, 0]}
    admitted = rejected = 0
    for index, n_ok, tokens, n_429 in stats["timeline"]["bins"]:
        start = index * bin_s - t0
        if start >= window_s:
            continue
        part = sums["first" if start < START_S else "steady"]
        part[0] += n_ok
        part[1] += tokens
        admitted += n_ok
        rejected += n_429

    def util(part: list[int], seconds: float) -> float:
        return max(part[0] / seconds / (RPM / 60), part[1] / seconds / (TPM / 60))

    return {
        "first5s": util(sums["first"], START_S),
        "steady": util(sums["steady"], window_s - START_S),
        "rate429": rejected / max(1, admitted + rejected),
        "admitted": admitted,
        "rejected": rejected,
    }


async def client_for_window(name: str, url: str, mode: str, window_s: float, workers: int) -> float:
    """Run one client for the window; returns its t0 on the simulator's clock."""
    client = make_client(name, url, mode, workers)
    async with httpx.AsyncClient(timeout=30) as http:
        t0 = (await sim_stats(http, url))["now"]
    task = asyncio.create_task(client)
    await asyncio.sleep(window_s)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return t0


def client_process(name: str, url: str, mode: str, window_s: float, workers: int) -> float:
    """Each client in its own process: one client's bursts never stall another's event loop."""
    return run(client_for_window(name, url, mode, window_s, workers))  # type: ignore[return-value]


async def counted(urls: dict[str, str], t0s: dict[str, float], window_s: float) -> dict:
    async with httpx.AsyncClient(timeout=30) as http:
        return {
            name: at_simulator(await sim_stats(http, urls[name], t0s[name]), t0s[name], window_s)
            for name in CLIENTS
        }


def run_mode(urls: dict[str, str], mode: str, window_s: float, workers: int) -> dict:
    """All three clients at once, each in a child process of this one."""
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(len(CLIENTS), mp_context=context) as pool:
        futures = {
            name: pool.submit(client_process, name, urls[name], mode, window_s, workers)
            for name in CLIENTS
        }
        t0s = {name: future.result() for name, future in futures.items()}
    return run(counted(urls, t0s, window_s))  # type: ignore[return-value]


def run(coro: Coroutine) -> object:
    """uvloop when installed: the client's event loop is part of what is measured."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 s window per mode")
    parser.add_argument("--window", type=float, default=None, help="seconds per mode (default 30)")
    parser.add_argument("--workers", type=int, default=256)
    args = parser.parse_args()
    window = args.window or (20.0 if args.quick else 30.0)
    start = time.monotonic()
    lines = []
    # Six simulator processes started together (one per client and mode); stopped before the
    # last lines are printed.
    with ExitStack() as stack, ThreadPoolExecutor(6) as pool:
        futures = {
            (mode, name): pool.submit(
                stack.enter_context, run_simulator(sim_config(mode), subprocess_mode=True)
            )
            for mode in MODES
            for name in CLIENTS
        }
        urls = {key: future.result() for key, future in futures.items()}
        for mode in MODES:
            load_before = os.getloadavg()[0]
            res = run_mode({n: urls[mode, n] for n in CLIENTS}, mode, window, args.workers)
            load_after = os.getloadavg()[0]
            for name in CLIENTS:
                r = res[name]
                print(
                    f"{mode} {name}: first5s={r['first5s']:.3f} steady={r['steady']:.3f} "
                    f"rate429={r['rate429']:.4f} admitted={r['admitted']} rejected={r['rejected']}"
                )
            print(f"{mode}: window={window:g}s load_avg_1min={load_before:.2f}->{load_after:.2f}")
            ours, cur, cook = res["ours"], res["curator"], res["cookbook"]
            lines.append(
                f"ratelimit: ours_steady={ours['steady']:.3f} curator_steady={cur['steady']:.3f} "
                f"cookbook_steady={cook['steady']:.3f} ours_first5s={ours['first5s']:.3f} "
                f"curator_first5s={cur['first5s']:.3f} rate429={ours['rate429']:.4f} mode={mode}"
            )
    print(f"total {time.monotonic() - start:.1f}s")
    for line in lines:
        print(line, flush=True)


if __name__ == "__main__":
    main()
