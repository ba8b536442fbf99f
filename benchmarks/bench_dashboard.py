"""Dashboard and /metrics latency with many stored stories.

Seeds an embedded Postgres with jobs, tasks, stories, requests and per-minute rollups using
`INSERT ... SELECT generate_series` (100,000 stories with --quick; 100,000 then 1,000,000
otherwise), then times the /admin page, each /admin/data endpoint and /metrics through the
ASGI app (median of 20 each).

"ours": the dashboard, which reads rollups, jobs counters and partial indexes.
"baseline": the same headline figures computed the naive way, by scanning raw stories and
requests (per-model counts, tokens, cost and median latency; stories by outcome).

    python benchmarks/bench_dashboard.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

TOKEN = "bench-admin-token"
FAST_PG = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
STORIES_PER_JOB = 100_000
STORIES_PER_MINUTE = 500  # how fast the seeded history was "made": sets the rollup row count
MODELS = ("gpt-4o", "gpt-4o-mini")
ENDPOINTS = (
    "/admin",
    "/admin/data/overview",
    "/admin/data/rates",
    "/admin/data/cost",
    "/admin/data/health",
    "/admin/data/jobs",
    "/metrics",
)
JOB_MODELS = '[{"model": "gpt-4o", "weight": 0.5}, {"model": "gpt-4o-mini", "weight": 0.5}]'
RECIPE = '{"verb": "run", "noun": "dog", "adjective": "happy", "features": ["Dialogue"]}'


async def seed_jobs(session: Any, *, first: int, count: int) -> list[uuid.UUID]:
    """`count` more jobs of STORIES_PER_JOB stories; only the newest two stay active."""
    ids = [uuid.uuid4() for _ in range(count)]
    await session.execute(
        text(
            "UPDATE jobs SET status = 'completed', finished_at = now(); "
            "UPDATE tasks SET status = 'cancelled' WHERE status = 'pending'"
        )
    )
    for k, job_id in enumerate(ids):
        await session.execute(
            text(
                "INSERT INTO jobs (id, name, n_stories, models, template_version, max_tokens, "
                "seed, budget_usd, status, provider, created_at, started_at) VALUES "
                "(:id, :name, :n, CAST(:models AS jsonb), 'v1', 600, :seed, 1000, "
                "'completed', 'openai', now() - make_interval(mins => :age), "
                "now() - make_interval(mins => :age))"
            ),
            {
                "id": job_id,
                "name": f"batch-{first + k}",
                "n": STORIES_PER_JOB,
                "models": JOB_MODELS,
                "seed": first + k,
                "age": 1000 - first - k,
            },
        )
    return ids


async def seed_rows(session: Any, *, job_ids: list[uuid.UUID], pending_per_job: int) -> None:
    """Tasks, stories and requests of the given jobs, in a few set-based statements."""
    n = STORIES_PER_JOB * len(job_ids)
    await session.execute(
        text(
            "INSERT INTO tasks (job_id, index, recipe, model, status, attempts) "
            "SELECT ids[i / :per + 1], i % :per, CAST(:recipe AS jsonb), "
            "CASE WHEN i % 2 = 0 THEN 'gpt-4o' ELSE 'gpt-4o-mini' END, 'done', 1 "
            "FROM generate_series(0, :n - 1) AS i, (SELECT CAST(:ids AS uuid[]) AS ids) j"
        ),
        {"per": STORIES_PER_JOB, "recipe": RECIPE, "n": n, "ids": job_ids},
    )
    # The newest two jobs are still going: tasks beyond their stored stories wait in the queue.
    active = job_ids[-2:]
    await session.execute(
        text(
            "INSERT INTO tasks (job_id, index, recipe, model, status) "
            "SELECT job_id, :per + i, CAST(:recipe AS jsonb), 'gpt-4o', 'pending' "
            "FROM unnest(CAST(:ids AS uuid[])) AS job_id, generate_series(0, :pending - 1) i"
        ),
        {"per": STORIES_PER_JOB, "recipe": RECIPE, "ids": active, "pending": pending_per_job},
    )
    await session.execute(
        text("UPDATE jobs SET n_stories = n_stories + :pending WHERE id = ANY(:ids)"),
        {"pending": pending_per_job, "ids": active},
    )
    await session.execute(
        text(
            "INSERT INTO stories (task_id, job_id, text, verb, noun, adjective, features, "
            "prompt, model, provider, prompt_tokens, completion_tokens, cost_usd, latency_s, "
            "finish_reason, accepted, rejection_reasons, text_hash, created_at) "
            "SELECT t.id, t.job_id, 'Once upon a time, there was a happy dog named Sam. Sam "
            "liked to run in the park with his friend Lily. One day ... story ' || t.id, "
            "'run', 'dog', 'happy', '[\"Dialogue\"]', NULL, t.model, 'openai', 180, 220, "
            "0.0004, 1.2 + (t.id % 17) / 10.0, 'stop', t.id % 25 <> 0, "
            "CASE WHEN t.id % 25 = 0 THEN '[\"too_short\"]'::jsonb ELSE '[]'::jsonb END, "
            "md5(t.id::text), now() "
            "FROM tasks t WHERE t.job_id = ANY(:ids) AND t.status = 'done'"
        ),
        {"ids": job_ids},
    )
    await session.execute(
        text(
            "INSERT INTO requests (job_id, task_id, kind, model, provider, outcome, error_class, "
            "status, attempt, prompt_tokens, completion_tokens, cost_usd, latency_s, "
            "finish_reason) "
            "SELECT s.job_id, s.task_id, 'story', s.model, 'openai', 'ok', NULL, 200, "
            "CASE WHEN s.id % 10 = 0 THEN 2 ELSE 1 END, 180, 220, 0.0004, s.latency_s, 'stop' "
            "FROM stories s WHERE s.job_id = ANY(:ids) "
            "UNION ALL "
            "SELECT s.job_id, s.task_id, 'story', s.model, 'openai', 'error', 'rate_limit', "
            "429, 1, 0, 0, 0, 0.05, NULL FROM stories s "
            "WHERE s.job_id = ANY(:ids) AND s.id % 10 = 0"
        ),
        {"ids": job_ids},
    )


async def seed_rollups_and_counters(session: Any, *, stories: int) -> None:
    """Per-minute rollups ending now (two models, one job per minute) and job counters."""
    minutes = stories // STORIES_PER_MINUTE
    per_model = STORIES_PER_MINUTE // len(MODELS)
    await session.execute(text("DELETE FROM rollups_minute"))
    await session.execute(
        text(
            "INSERT INTO rollups_minute (minute, model, job_id, requests, errors, rate_limited, "
            "retries, errors_by_class, prompt_tokens, completion_tokens, cost_usd, "
            "stories_accepted, stories_rejected, tasks_failed, rejections_by_reason, "
            "latency_sum_s, lat_le_250ms, lat_le_500ms, lat_le_1s, lat_le_2s, lat_le_5s, "
            "lat_le_10s, lat_le_30s, lat_gt_30s) "
            "SELECT date_trunc('minute', now()) - make_interval(mins => :minutes - 1 - m), "
            "model, jobs[m * :spm / :per + 1], :pm * 11 / 10, :pm / 10, :pm / 10, :pm / 10, "
            "jsonb_build_object('rate_limit', :pm / 10), :pm * 180, :pm * 220, :pm * 0.0004, "
            ":pm * 24 / 25, :pm / 25, 0, jsonb_build_object('too_short', :pm / 25), "
            ":pm * 1.9, :pm / 10, 0, 0, :pm / 2, :pm / 2, 0, 0, 0 "
            "FROM generate_series(0, :minutes - 1) AS m, unnest(CAST(:models AS text[])) model, "
            "(SELECT array_agg(id ORDER BY created_at) AS jobs FROM jobs) j"
        ),
        {
            "minutes": minutes,
            "spm": STORIES_PER_MINUTE,
            "per": STORIES_PER_JOB,
            "pm": per_model,
            "models": list(MODELS),
        },
    )
    await session.execute(
        text(
            "UPDATE jobs j SET completed = c.acc, rejected = c.rej, spent_usd = c.cost, "
            "n_requests = c.req, prompt_tokens = c.pt, completion_tokens = c.ct "
            "FROM (SELECT job_id, SUM(stories_accepted) acc, SUM(stories_rejected) rej, "
            "SUM(cost_usd) cost, SUM(requests) req, SUM(prompt_tokens) pt, "
            "SUM(completion_tokens) ct FROM rollups_minute GROUP BY job_id) c "
            "WHERE c.job_id = j.id"
        )
    )
    await session.execute(
        text(
            "WITH active AS (SELECT id FROM jobs ORDER BY created_at DESC LIMIT 2) "
            "UPDATE jobs SET status = CASE WHEN id = (SELECT id FROM jobs "
            "ORDER BY created_at DESC LIMIT 1) THEN 'running' ELSE 'paused' END, "
            "finished_at = NULL WHERE id IN (SELECT id FROM active)"
        )
    )
    await session.execute(
        text(
            "INSERT INTO workers (id, host, pid, concurrency, status, in_flight) "
            "SELECT 'bench-' || i, 'host-' || i, 1000 + i, 64, 'running', 60 "
            "FROM generate_series(1, 4) i ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()"
        )
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


BASELINE_SQL = (
    "SELECT model, COUNT(*), SUM(prompt_tokens + completion_tokens), SUM(cost_usd), "
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_s), "
    "COUNT(*) FILTER (WHERE outcome <> 'ok') FROM requests GROUP BY model",
    "SELECT accepted, COUNT(*) FROM stories GROUP BY accepted",
)


async def time_baseline(sessionmaker: Any, repeats: int) -> list[float]:
    """Milliseconds to compute the headline figures from raw rows."""
    times = []
    async with sessionmaker() as session:
        for _ in range(repeats):
            start = time.perf_counter()
            for sql in BASELINE_SQL:
                (await session.execute(text(sql))).all()
            times.append((time.perf_counter() - start) * 1000)
    return times


async def run(stages: list[int], repeats: int, baseline_repeats: int) -> None:
    from service.api import create_app
    from service.api.metrics import install_metrics
    from service.dashboard import install
    from service.db import make_engine, make_sessionmaker
    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, ensure_database
    from service.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    server = EmbeddedPostgres(root / "pg", extra_options=FAST_PG)
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
        results: dict[int, dict[str, list[float]]] = {}
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
                    jobs_to_add = (stories - seeded) // STORIES_PER_JOB
                    async with sessionmaker() as session:
                        ids = await seed_jobs(
                            session, first=seeded // STORIES_PER_JOB, count=jobs_to_add
                        )
                        await seed_rows(session, job_ids=ids, pending_per_job=5_000)
                        await seed_rollups_and_counters(session, stories=stories)
                        await session.commit()
                    async with engine.connect() as conn:
                        await conn.execution_options(isolation_level="AUTOCOMMIT")
                        await conn.execute(text("VACUUM ANALYZE"))
                    seeded = stories
                    seed_s = time.perf_counter() - start
                    async with sessionmaker() as session:
                        counted = (
                            await session.execute(text("SELECT COUNT(*) FROM stories"))
                        ).scalar_one()
                        rollups = (
                            await session.execute(text("SELECT COUNT(*) FROM rollups_minute"))
                        ).scalar_one()
                    print(
                        f"seeded stories={counted} rollup_rows={rollups} in {seed_s:.1f}s",
                        flush=True,
                    )
                    timings = await time_endpoints(client, repeats)
                    results[stories] = timings
                    for path, times in timings.items():
                        print(
                            f"  stories={stories:>9,} {path:<22} median_ms="
                            f"{statistics.median(times):7.2f} max_ms={max(times):7.2f}"
                        )
                    base = await time_baseline(sessionmaker, baseline_repeats)
                    ours = statistics.median(timings["/admin/data/overview"]) + statistics.median(
                        timings["/admin/data/rates"]
                    )
                    print(
                        f"  baseline raw-row scan median_ms={statistics.median(base):.1f} vs "
                        f"ours (overview+rates) {ours:.1f} ms: "
                        f"ratio={statistics.median(base) / ours:.1f}x"
                    )
        await engine.dispose()
        if len(stages) > 1:
            low, high = results[stages[0]], results[stages[-1]]
            worst = max(statistics.median(high[p]) / statistics.median(low[p]) for p in ENDPOINTS)
            print(f"slowdown {stages[-1]:,} vs {stages[0]:,} stories: worst_ratio={worst:.2f}x")
        final = results[stages[-1]]
        p50 = max(statistics.median(t) for t in final.values())
        worst_single = max(max(t) for t in final.values())
        print(f"dashboard: p50_ms={p50:.1f} max_ms={worst_single:.1f} stories={counted}")
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 stories only (< 45 s)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    stages = [100_000] if args.quick else [100_000, 1_000_000]
    asyncio.run(run(stages, args.repeats, baseline_repeats=3))


if __name__ == "__main__":
    main()
