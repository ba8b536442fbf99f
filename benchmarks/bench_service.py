"""Generation service benchmark: jobs submitted over REST, made by worker processes.

1. End to end (the headline): simulator (own process) with zero latency and no limits, a
   store holding `--stored N` stories (default 0; preloaded in bulk with their dedup index,
   benchmarks/preload.py). A job of n stories (20,000; --quick 3,000) is submitted over REST
   and only then two worker processes start: stories per second from the submit until the last
   story is stored *and* checked for near-duplicates (both times printed), worker start-up
   included. CPU milliseconds per story of the service processes (API + workers, their
   start-up included); the simulator's and Postgres' share beside it.
2. Warm: a second job of n stories on the same, now running, workers (steady state, printed
   for comparison only). Baseline in the same run: the generator engine alone in this process
   (same simulator, no database, no queue) on n/4 stories.
3. At the limit: simulator RPM=6,000 with median latency 1.5 s; two fresh worker processes
   share the model's budget through Postgres (TINYSTORIES_MODEL_LIMITS). Counted at the
   provider: the simulator's own admitted counter, sampled every 0.25 s. `plain_over_limit`
   is the plain count of requests admitted in a window (20 s with --quick, 60 s otherwise)
   that begins 4 s after the first request, over what the limit allows in that window;
   `plain_from_start` the same from the first request (start-up burst and stalls included);
   `slope_over_limit` a least-squares slope over the same window, for comparison. Admitted
   requests per second are printed for the whole phase. Above 1.0 = the provider's limit
   exceeded.

Last line: `service: stories_per_s=X stored=N plain_over_limit=Y ...`.

    python benchmarks/bench_service.py [--quick] [--stored N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from service_procs import (
    Service,
    cpu_s,
    listener_pid,
    load_avg,
    start_simulators,
    stop,
    tree_cpu_s,
    wait_for,
    watch_job,
)

MODEL = "simulator-story-1"
RPM = 6000
WORKERS = 2


def job_run(
    svc: Service, n: int, seed: int, others: dict[str, int], procs: list | None = None
) -> tuple[dict[str, float], list]:
    """Submit one job of n stories to `procs`; None: start the workers right after the submit,
    so their start-up is counted. Returns the figures and the workers (running on return)."""
    cpu0 = sum(cpu_s(p.pid) for p in [*(procs or []), svc.api])
    other0 = {name: tree_cpu_s(pid) for name, pid in others.items()}
    start = time.monotonic()
    job_id = svc.submit(n, seed=seed)
    submit_s = time.monotonic() - start
    if procs is None:
        procs = svc.workers(WORKERS, concurrency=64)
    got = watch_job(svc.url, job_id, start)
    cpu = sum(cpu_s(p.pid) for p in [*procs, svc.api]) - cpu0
    other = {name: tree_cpu_s(pid) - other0[name] for name, pid in others.items()}
    made = got["made"]
    got.update(
        submit_s=submit_s,
        stories_per_s=made / got["checked_s"],
        stored_per_s=made / got["stored_s"],
        cpu_ms_per_story=cpu * 1000 / made,
        **{f"{name}_cpu_ms_per_story": v * 1000 / made for name, v in other.items()},
    )
    return got, procs


def show(name: str, got: dict[str, float]) -> None:
    keys = [
        "made", "failed", "submit_s", "first_story_s", "stored_s", "checked_s", "stored_per_s",
        "stories_per_s", "cpu_ms_per_story", "simulator_cpu_ms_per_story",
        "postgres_cpu_ms_per_story",
    ]  # fmt: skip
    fields = " ".join(f"{k}={got[k]:.2f}" if k in got else "" for k in keys)
    print(f"  {name} {fields} load={load_avg()}", flush=True)


async def engine_only(sim_url: str, n: int, concurrency: int = 64) -> float:
    """Baseline: the generator engine alone, no database."""
    from generator.checks import StoryChecker
    from generator.client import ChatClient
    from generator.engine import StoryEngine
    from generator.pricing import PriceTable
    from generator.ratelimit import LocalRateLimiter
    from generator.retry import RetryPolicy
    from vocab import RecipeSampler, default_vocabulary

    client = ChatClient(base_url=sim_url, api_key="x", provider="simulator")
    engine = StoryEngine(
        client=client,
        limiter=LocalRateLimiter(),
        pricing=PriceTable.load(),
        retry=RetryPolicy(),
        checker=StoryChecker(default_vocabulary()),
    )
    sampler = RecipeSampler()
    recipes = [sampler.recipe(99, i) for i in range(n)]
    sem = asyncio.Semaphore(concurrency)

    async def one(recipe) -> None:
        async with sem:
            await engine.story(recipe, model=MODEL, max_tokens=600)

    # Untimed warm-up: the checker's word lists and the client's connections load lazily.
    await asyncio.gather(*(one(r) for r in recipes[:64]))
    start = time.monotonic()
    await asyncio.gather(*(one(r) for r in recipes))
    elapsed = time.monotonic() - start
    await client.aclose()
    return n / elapsed


def slope_per_s(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, cumulative count) samples."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_k = sum(k for _, k in points) / n
    cov = sum((t - mean_t) * (k - mean_k) for t, k in points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return cov / var if var else 0.0


def at_limit(svc: Service, procs: list, sim_url: str, window_s: float) -> dict[str, float]:
    """Requests the provider admitted over its limit, counted by the provider itself."""
    # The Postgres bucket starts with 1 s of refill and each process may hold a 0.2 s lease:
    # the first seconds may exceed the per-second rate by that burst (the provider allows 2 s).
    warmup = 4.0
    stats = httpx.Client(base_url=sim_url, timeout=5)

    def counters() -> tuple[float, int, int]:
        body = stats.get("/simulator/stats").json()
        return time.monotonic(), int(body["admitted"]), int(body["rejected"])

    base = counters()
    # Enough tasks that the workers stay busy past the window (demand is ~1.8x the limit).
    job_id = svc.submit(int(RPM / 60 * (warmup + window_s + 10)), seed=77)
    samples = [counters()]
    while samples[-1][1] + samples[-1][2] == base[1] + base[2]:
        if samples[-1][0] - base[0] > 60:
            raise SystemExit("no at-limit request reached the simulator in 60 s")
        time.sleep(0.02)
        samples.append(counters())
    t0 = samples[-1][0]
    samples = [(t0, base[1], base[2])]  # count from before the first request
    while samples[-1][0] < t0 + warmup + window_s:
        time.sleep(max(0.0, t0 + 0.25 * len(samples) - time.monotonic()))
        samples.append(counters())
    stats.close()
    svc.http.post(f"/v1/jobs/{job_id}/cancel")
    stop(procs, timeout=5)
    per_s = [samples[i + 4][1] - samples[i][1] for i in range(0, len(samples) - 4, 4)]
    print("  at_limit admitted per second: " + " ".join(map(str, per_s)), flush=True)
    window = [(t - t0, a, r) for t, a, r in samples if t - t0 >= warmup]
    span = window[-1][0] - window[0][0]
    admitted = window[-1][1] - window[0][1]
    limited = window[-1][2] - window[0][2]
    whole = samples[-1][0] - t0
    got = {
        "plain_over_limit": admitted / span * 60 / RPM,
        "plain_from_start": (samples[-1][1] - base[1]) / whole * 60 / RPM,
        "slope_over_limit": slope_per_s([(t, a) for t, a, _ in window]) * 60 / RPM,
        "rate429": limited / max(admitted + limited, 1),
    }
    print(
        f"  at_limit rpm_limit={RPM} window_s={span:.1f} admitted={admitted} "
        + " ".join(f"{k}={v:.3f}" for k, v in got.items())
        + f" load={load_avg()}",
        flush=True,
    )
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about two minutes)")
    parser.add_argument(
        "--stored", type=int, default=0, help="stories (with dedup index) stored beforehand"
    )
    args = parser.parse_args()
    if args.stored < 0:
        parser.error("--stored must be >= 0")
    n = 3000 if args.quick else 20000
    window = 20.0 if args.quick else 60.0
    t0 = time.monotonic()

    def phase(name: str) -> None:
        print(f"  [{time.monotonic() - t0:5.1f} s] {name} load={load_avg()}", flush=True)

    from generator.simulator import SimulatorConfig
    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, embedded_url

    root = Path(tempfile.mkdtemp(prefix="bench-service-"))
    server = EmbeddedPostgres(root / "pg")
    try:
        with ExitStack() as stack:
            (sim_url, limit_sim_url), sims = start_simulators(
                [
                    SimulatorConfig(seed=1),
                    SimulatorConfig(rpm=RPM, latency_median_s=1.5, seed=5),
                ]
            )
            stack.enter_context(sims)
            # At the end nothing in flight matters: skip the simulators' graceful shutdown.
            sim_pids = [listener_pid(u) for u in (sim_url, limit_sim_url)]
            stack.callback(lambda: [os.kill(pid, signal.SIGKILL) for pid in sim_pids])
            url = embedded_url(root / "pg")
            upgrade(url)
            phase("database and simulators ready")
            if args.stored:
                from preload import preload

                preload(url, args.stored)
                phase(f"preloaded {args.stored} stories")
            svc = Service(url, root, sim_url, MODEL)
            stack.callback(svc.close)
            wait_for(svc.healthy, 120, "the API")
            info = server.running()
            others = {"simulator": sim_pids[0]}
            if info is not None:
                others["postgres"] = info.pid
            cold, ceiling = job_run(svc, n, seed=1, others=others)
            stack.callback(stop, ceiling)
            show("end_to_end (workers started after the submit)", cold)
            warm, _ = job_run(svc, n, seed=2, others=others, procs=ceiling)
            show("warm (same workers, already running)", warm)
            stop(ceiling, timeout=10)
            phase("ceiling done")
            base = asyncio.run(engine_only(sim_url, max(n // 4, 250)))
            print(f"  baseline engine_only stories_per_s={base:.1f}", flush=True)
            limited = svc.workers(
                WORKERS,
                concurrency=160,
                TINYSTORIES_MODEL_LIMITS=json.dumps({MODEL: {"rpm": RPM}}),
                TINYSTORIES_SIMULATOR_BASE_URL=limit_sim_url,
            )
            stack.callback(stop, limited)
            wait_for(lambda: all(map(Service.started, limited)), 120, "the at-limit workers")
            limit = at_limit(svc, limited, limit_sim_url, window)
            phase("at-limit done")
        print(
            f"  ratio end_to_end/engine_only={cold['stories_per_s'] / base:.2f} "
            f"warm/engine_only={warm['stories_per_s'] / base:.2f}"
        )
        print(
            f"service: stories_per_s={cold['stories_per_s']:.1f} stored={args.stored} "
            f"plain_over_limit={limit['plain_over_limit']:.3f} "
            f"plain_from_start={limit['plain_from_start']:.3f} "
            f"slope_over_limit={limit['slope_over_limit']:.3f} "
            f"warm_stories_per_s={warm['stories_per_s']:.1f} "
            f"cpu_ms_per_story={cold['cpu_ms_per_story']:.2f} load1={os.getloadavg()[0]:.1f}"
        )
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
