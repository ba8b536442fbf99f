"""A slow local server (llama.cpp on CPU class): adaptive defaults vs the fixed README defaults.

Conditions: the simulator as a slow server, 20 tokens/s per request, 4 requests generating at
once, the rest queued in arrival order (latency grows with concurrency, as on one GPU or CPU).
Two clients run at the same time, each against its own simulator process with the same config
and seed, both through `generate_stories` (what `tinystories generate` runs) with the README
defaults: concurrency 32, timeout 60 s, max tokens 1,024, 6 attempts per story.

* ours: adaptive concurrency and timeouts (the default);
* fixed: the same defaults with adaptation off (concurrency 32 and 60 s throughout).

Figures: stories per minute, from each client's first story to the end of the window (the
pipeline fill before the first answer is the same for both and not the server's capacity);
the abandoned share, counted AT THE SIMULATOR when the window ends: answers the server finished
for a client that had given up (its connection closed) over all answers it finished; the
server's capacity = capacity x tokens/s / mean story tokens x 60.

Last line: `slow_server: ours_per_min=X fixed_per_min=Y abandoned=Z` (Z: ours).

    python benchmarks/bench_slow_server.py [--quick] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from generator.adaptive import AdaptiveConfig
from generator.checks import StoryChecker
from generator.client import ClientConfig
from generator.engine import StoryOutcome
from generator.generate import generate_stories
from generator.pricing import PriceTable
from generator.simulator import SimulatorConfig, run_simulator
from vocab import RecipeSampler

MODEL = "simulator-story-1"
# The README defaults of `tinystories generate`.
CONCURRENCY, TIMEOUT_S, MAX_TOKENS = 32, 60.0, 1024


@dataclass
class Run:
    """One client's stories during the window."""

    name: str
    started: float = 0.0
    finished_at: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    failed: int = 0
    server: dict = field(default_factory=dict)

    def on_story(self, outcome: StoryOutcome) -> None:
        if outcome.error is not None:
            self.failed += 1
            return
        self.finished_at.append(time.perf_counter())
        self.tokens.append(outcome.completion_tokens)
        self.latency.append(outcome.latency_s)

    def per_min(self, end: float) -> float:
        if not self.finished_at:
            return 0.0
        first = self.finished_at[0]
        return 60.0 * (len(self.finished_at) - 1) / max(end - first, 1e-9)

    @property
    def abandoned_share(self) -> float:
        completed = self.server.get("completed", 0)
        return self.server.get("abandoned", 0) / completed if completed else 0.0


async def client_run(run: Run, url: str, adaptive: AdaptiveConfig, out: Path) -> None:
    sampler = RecipeSampler()
    recipes = [sampler.recipe(11, i) for i in range(5000)]  # more than any window finishes
    run.started = time.perf_counter()
    await generate_stories(
        recipes=recipes,
        out_dir=out,
        client_config=ClientConfig(
            base_url=url, api_key="bench", timeout_s=TIMEOUT_S, provider="simulator"
        ),
        model=MODEL,
        pricing=PriceTable.load(),
        checker=StoryChecker(),
        concurrency=CONCURRENCY,
        max_tokens=MAX_TOKENS,
        on_story=run.on_story,
        adaptive=adaptive,
    )


async def measure(urls: dict[str, str], seconds: float) -> tuple[dict[str, Run], float]:
    runs = {name: Run(name) for name in urls}
    configs = {"ours": AdaptiveConfig(), "fixed": AdaptiveConfig(enabled=False)}
    with tempfile.TemporaryDirectory() as tmp:
        tasks = []
        for name, url in urls.items():
            out = Path(tmp) / name
            out.mkdir()
            tasks.append(asyncio.create_task(client_run(runs[name], url, configs[name], out)))
        await asyncio.sleep(seconds)
        end = time.perf_counter()
        # Read the servers before the clients stop: stopping closes connections on purpose.
        async with httpx.AsyncClient(timeout=10) as http:
            for name, url in urls.items():
                stats = (await http.get(url + "/simulator/stats")).json()
                runs[name].server = stats["server"]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return runs, end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 75 s window (under 2 minutes)")
    parser.add_argument("--seconds", type=float, default=None, help="window (default 240 s)")
    parser.add_argument("--tokens-per-s", type=float, default=20.0)
    parser.add_argument("--capacity", type=int, default=4)
    args = parser.parse_args()
    seconds = args.seconds or (75.0 if args.quick else 240.0)
    if seconds <= 0 or args.tokens_per_s <= 0 or args.capacity < 1:
        parser.error("--seconds and --tokens-per-s must be positive, --capacity >= 1")
    logging.basicConfig(level=logging.ERROR)  # one failed story per line would bury the table
    # The checker loads its inflection tables on first use: do it before the window.
    StoryChecker().check("A dog ran.", finish_reason="stop", required_words=["dog"])
    config = SimulatorConfig(tokens_per_s=args.tokens_per_s, capacity=args.capacity, seed=5)
    with ExitStack() as stack:
        urls = {
            name: stack.enter_context(run_simulator(config, subprocess_mode=True))
            for name in ("ours", "fixed")
        }
        runs, end = asyncio.run(measure(urls, seconds))
    tokens = runs["ours"].tokens + runs["fixed"].tokens
    mean_tokens = statistics.fmean(tokens) if tokens else float("nan")
    capacity_per_min = args.capacity * args.tokens_per_s / mean_tokens * 60.0
    print(
        f"slow server: {args.tokens_per_s:g} tokens/s per request, capacity {args.capacity}, "
        f"window {seconds:g} s; mean story {mean_tokens:.0f} tokens -> "
        f"capacity {capacity_per_min:.1f} stories/min"
    )
    print("| client | stories | failed | stories/min | of capacity | mean latency s |", end="")
    print(" latency s, last quarter |", end="")
    print(" server answers | abandoned | abandoned share | max queued |")
    for run in runs.values():
        server = run.server
        latency = statistics.fmean(run.latency) if run.latency else float("nan")
        last = run.latency[-max(1, len(run.latency) // 4) :]  # after ours has adapted
        late = statistics.fmean(last) if last else float("nan")
        per_min = run.per_min(end)
        print(
            f"| {run.name} | {len(run.finished_at)} | {run.failed} | {per_min:.1f} | "
            f"{per_min / capacity_per_min:.2f} | {latency:.1f} | {late:.1f} | "
            f"{server.get('completed')} | "
            f"{server.get('abandoned')} | {run.abandoned_share:.3f} | {server.get('max_queued')} |"
        )
    ours, fixed = runs["ours"], runs["fixed"]
    print(
        f"slow_server_capacity: capacity_per_min={capacity_per_min:.1f} "
        f"ours_of_capacity={ours.per_min(end) / capacity_per_min:.3f}"
    )
    print(
        f"slow_server: ours_per_min={ours.per_min(end):.1f} "
        f"fixed_per_min={fixed.per_min(end):.1f} abandoned={ours.abandoned_share:.3f}"
    )


if __name__ == "__main__":
    main()
