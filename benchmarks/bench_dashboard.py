"""Dashboard and /metrics latency with many stored stories.

Seeds an embedded Postgres with jobs, tasks, stories, requests and per-minute rollups using
`INSERT ... SELECT generate_series` (100,000 stories with --quick; 100,000 then 1,000,000
otherwise), then times the /admin page, each /admin/data endpoint and /metrics through the
ASGI app (median of 20 each).

"ours": the dashboard, which reads rollups, jobs counters and partial indexes.
Baselines (same figures: per model since start, requests, tokens, cost, errors and the latency
histogram; per minute over the last hour; stories by outcome), each a user's own choice:
"baseline_indexed": the raw stories and requests rows with the indexes a user would create
(requests.created_at for the last hour; covering indexes for index-only since-start sums).
"baseline_matview": materialised views (requests per minute and model; stories by outcome),
refreshed every minute; the refresh time is what they cost Postgres each minute.
rollup_cost_ratio: the rollups ours reads are written by the workers, in the transactions that
store their stories; a service run with the rollup writes on and off (benchmarks/rollup_cost.py)
gives stories/s with / without them.
browser_p50_ms / diversity_p50_ms: the story browser's pages (first, deep keyset, each filter)
and the diversity report on a store of the same size (benchmarks/bench_browser.py), target
< 200 ms each.

    python benchmarks/bench_dashboard.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

TOKEN = "bench-admin-token"
FAST_PG = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
ENDPOINTS = (
    "/admin",
    "/admin/data/overview",
    "/admin/data/rates",
    "/admin/data/cost",
    "/admin/data/health",
    "/admin/data/jobs",
    "/metrics",
)


async def time_endpoints(client: httpx.AsyncClient, repeats: int) -> dict[str, list[float]]:
    """Milliseconds per request for each endpoint (after one warm-up request)."""
    out: dict[str, list[float]] = {}
    for path in ENDPOINTS:
        resp = await client.get(path)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            resp = await client.get(path)
            times.append((time.perf_counter() - start) * 1000)
            assert resp.status_code == 200
        out[path] = times
    return out


# The dashboard's headline figures from raw rows: per model since start (requests, tokens,
# cost, errors, the latency histogram the dashboard shows), per minute over the last hour, and
# stories by outcome.
_LATENCY = ", ".join(
    f"COUNT(*) FILTER (WHERE latency_s <= {b})" for b in (0.25, 0.5, 1, 2, 5, 10, 30)
)
_LATENCY_NAMED = ", ".join(
    f"COUNT(*) FILTER (WHERE latency_s <= {b}) AS lat_{i}"
    for i, b in enumerate((0.25, 0.5, 1, 2, 5, 10, 30))
)
BASELINE_SQL = (
    "SELECT model, COUNT(*), SUM(prompt_tokens + completion_tokens), SUM(cost_usd), "
    f"COUNT(*) FILTER (WHERE outcome <> 'ok'), {_LATENCY} FROM requests GROUP BY model",
    "SELECT date_trunc('minute', created_at), model, COUNT(*), "
    "SUM(prompt_tokens + completion_tokens) FROM requests "
    "WHERE created_at >= date_trunc('minute', now()) - interval '59 minutes' GROUP BY 1, 2",
    "SELECT accepted, COUNT(*) FROM stories GROUP BY accepted",
)
# What a user would create for those queries: a time index for the last hour, covering
# indexes so the since-start sums are index-only scans.
BASELINE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS bench_requests_created ON requests (created_at)",
    "CREATE INDEX IF NOT EXISTS bench_requests_model ON requests (model) INCLUDE "
    "(prompt_tokens, completion_tokens, cost_usd, outcome, latency_s)",
    "CREATE INDEX IF NOT EXISTS bench_stories_accepted ON stories (accepted)",
)
# Or a materialised view of per-minute sums, refreshed every minute (CONCURRENTLY: readers are
# not blocked; that needs a unique index).
MATVIEW = (
    "CREATE MATERIALIZED VIEW IF NOT EXISTS bench_minute AS "
    "SELECT date_trunc('minute', created_at) AS minute, model, COUNT(*) AS requests, "
    "SUM(prompt_tokens + completion_tokens) AS tokens, SUM(cost_usd) AS cost, "
    f"COUNT(*) FILTER (WHERE outcome <> 'ok') AS errors, {_LATENCY_NAMED} "
    "FROM requests GROUP BY 1, 2",
    "CREATE UNIQUE INDEX IF NOT EXISTS bench_minute_key ON bench_minute (minute, model)",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS bench_outcomes AS "
    "SELECT accepted, COUNT(*) AS stories FROM stories GROUP BY accepted",
    "CREATE UNIQUE INDEX IF NOT EXISTS bench_outcomes_key ON bench_outcomes (accepted)",
)
MATVIEW_SQL = (
    "SELECT model, SUM(requests), SUM(tokens), SUM(cost), SUM(errors) FROM bench_minute "
    "GROUP BY model",
    "SELECT minute, model, requests, tokens FROM bench_minute "
    "WHERE minute >= date_trunc('minute', now()) - interval '59 minutes'",
    "SELECT accepted, stories FROM bench_outcomes",
)
MATVIEW_REFRESH = (
    "REFRESH MATERIALIZED VIEW CONCURRENTLY bench_minute",
    "REFRESH MATERIALIZED VIEW CONCURRENTLY bench_outcomes",
)


async def timed_ms(sessionmaker: Any, statements: tuple[str, ...], repeats: int) -> float:
    """Median milliseconds to run the statements one after another."""
    times = []
    async with sessionmaker() as session:
        for _ in range(repeats):
            start = time.perf_counter()
            for sql in statements:
                (await session.execute(text(sql))).all()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def autocommit(engine: Any, statements: tuple[str, ...]) -> float:
    """Run DDL / maintenance outside a transaction; milliseconds."""
    start = time.perf_counter()
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        for sql in statements:
            await conn.execute(text(sql))
    return (time.perf_counter() - start) * 1000


async def measure_baseline_indexed(engine: Any, sessionmaker: Any, repeats: int) -> dict:
    """The raw-row queries with the indexes a user would create (built at the first stage,
    kept up to date by the later stages' inserts; their build is not in the query time)."""
    build_ms = await autocommit(engine, BASELINE_INDEXES)
    await autocommit(engine, ("VACUUM ANALYZE requests, stories",))
    ms = await timed_ms(sessionmaker, BASELINE_SQL, repeats)
    return {"baseline_indexed_ms": ms, "baseline_index_build_ms": build_ms}


async def measure_baseline_matview(engine: Any, sessionmaker: Any, repeats: int) -> dict:
    """Queries on a per-minute materialised view, and what its refresh costs each minute."""
    await autocommit(engine, MATVIEW)
    refresh = [await autocommit(engine, MATVIEW_REFRESH) for _ in range(3)]
    ms = await timed_ms(sessionmaker, MATVIEW_SQL, repeats)
    return {"baseline_matview_ms": ms, "matview_refresh_ms": statistics.median(refresh)}


async def measure_endpoints(client: httpx.AsyncClient, repeats: int, stories: int) -> dict:
    """Ours: median milliseconds of each endpoint; p50_ms is the slowest endpoint's median."""
    timings = await time_endpoints(client, repeats)
    for path, times in timings.items():
        print(
            f"  stories={stories:>9,} {path:<22} median_ms="
            f"{statistics.median(times):7.2f} max_ms={max(times):7.2f}"
        )
    return {
        "p50_ms": max(statistics.median(t) for t in timings.values()),
        "max_ms": max(max(t) for t in timings.values()),
        "overview_rates_ms": statistics.median(timings["/admin/data/overview"])
        + statistics.median(timings["/admin/data/rates"]),
        "per_path": {p: statistics.median(t) for p, t in timings.items()},
    }


async def run(stages: list[int], repeats: int, baseline_repeats: int) -> dict[str, float]:
    """Seed each stage, time ours and the baselines; the figures of the last stage."""
    from dashboard_seed import seed_stage

    from service.api import create_app
    from service.api.metrics import install_metrics
    from service.dashboard import install
    from service.db import make_engine, make_sessionmaker
    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, ensure_database
    from service.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    server = EmbeddedPostgres(root / "pg", extra_options=FAST_PG)
    results: dict[int, dict] = {}
    try:
        info = server.ensure_running()
        ensure_database(info.url(driver="postgresql"), "bench")
        url = info.url("bench")
        await asyncio.to_thread(upgrade, url)
        engine = make_engine(url, pool_size=4)
        sessionmaker = make_sessionmaker(engine)
        settings = Settings(
            database_url=url, admin_token=TOKEN, home=root / "home", _env_file=None,
            model_limits={"gpt-4o": {"rpm": 500, "tpm": 300000}},
        )  # fmt: skip
        app = create_app(settings)
        install(app)
        install_metrics(app)
        seeded = 0
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://bench",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as client:
                for stories in stages:
                    start = time.perf_counter()
                    counts = await seed_stage(engine, sessionmaker, stories=stories, seeded=seeded)
                    seeded = stories
                    print(
                        f"seeded {counts} in {time.perf_counter() - start:.1f}s load={load_avg()}",
                        flush=True,
                    )
                    got = await measure_endpoints(client, repeats, stories)
                    got |= await measure_baseline_indexed(engine, sessionmaker, baseline_repeats)
                    got |= await measure_baseline_matview(engine, sessionmaker, baseline_repeats)
                    got["stories"] = counts["stories"]
                    print(
                        f"  baselines: indexed raw rows {got['baseline_indexed_ms']:.1f} ms "
                        f"(CREATE INDEX IF NOT EXISTS: {got['baseline_index_build_ms']:.0f} ms), "
                        f"materialised view {got['baseline_matview_ms']:.1f} ms + refresh "
                        f"{got['matview_refresh_ms']:.0f} ms every minute; ours "
                        f"(overview+rates) {got['overview_rates_ms']:.1f} ms",
                        flush=True,
                    )
                    results[stories] = got
        await engine.dispose()
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    if len(stages) > 1:
        low, high = results[stages[0]]["per_path"], results[stages[-1]]["per_path"]
        worst = max(high[p] / low[p] for p in ENDPOINTS)
        print(f"slowdown {stages[-1]:,} vs {stages[0]:,} stories: worst_ratio={worst:.2f}x")
    final = results[stages[-1]]
    return {k: v for k, v in final.items() if k not in ("per_path", "overview_rates_ms")}


def load_avg() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 stories only")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--no-rollup-cost", action="store_true", help="skip the service run with rollups on/off"
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="skip the story browser and diversity timings"
    )
    args = parser.parse_args()
    stages = [100_000] if args.quick else [100_000, 1_000_000]
    print(f"load average at start: {load_avg()}", flush=True)
    figures = asyncio.run(run(stages, args.repeats, baseline_repeats=5))
    if not args.no_rollup_cost:
        from rollup_cost import measure_rollup_cost

        n, rounds = (3_000, 3) if args.quick else (10_000, 5)
        figures |= measure_rollup_cost(n, rounds)
    if not args.no_browser:
        # The story browser and the diversity report, on a store of the last stage's size
        # seeded by bench_browser (its own database: its stories carry recipes and features).
        from bench_browser import run as run_browser

        browser = asyncio.run(run_browser(stages[-1], max(5, args.repeats // 2)))
        figures |= {k: browser[k] for k in ("browser_p50_ms", "diversity_p50_ms")}
    figures["load1"] = os.getloadavg()[0]
    # Headline fields first; anything measured later is appended in the order it was added.
    order = [
        "p50_ms",
        "baseline_indexed_ms",
        "rollup_cost_ratio",
        "browser_p50_ms",
        "diversity_p50_ms",
    ]
    keys = [k for k in order if k in figures] + [k for k in figures if k not in order]
    print("dashboard: " + " ".join(f"{k}={_fmt(figures[k])}" for k in keys))


def _fmt(value: float) -> str:
    return (
        str(value) if isinstance(value, int) else f"{value:.3f}" if value < 10 else f"{value:.1f}"
    )


if __name__ == "__main__":
    main()
