"""Seeding of the dashboard benchmark's store: jobs, tasks, stories, requests and per-minute
rollups written set-based (`INSERT ... SELECT generate_series`), as a service that made them at
STORIES_PER_MINUTE would have left them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

STORIES_PER_JOB = 100_000
STORIES_PER_MINUTE = 500  # how fast the seeded history was "made": sets the rollup row count
MODELS = ("gpt-4o", "gpt-4o-mini")
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
    """Tasks, stories and requests of the given jobs, in a few set-based statements; their
    created_at spread over the past at STORIES_PER_MINUTE, ending now (earlier rows move back)."""
    n = STORIES_PER_JOB * len(job_ids)
    for table in ("stories", "requests"):
        await session.execute(
            text(
                f"UPDATE {table} SET created_at = created_at - "
                "make_interval(secs => :n * 60.0 / :spm)"
            ),
            {"n": n, "spm": STORIES_PER_MINUTE},
        )
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
            "md5(t.id::text), now() - make_interval(secs => (:n - 1 - "
            "row_number() OVER (ORDER BY t.id)) * 60.0 / :spm) "
            "FROM tasks t WHERE t.job_id = ANY(:ids) AND t.status = 'done' ORDER BY t.id"
        ),
        {"ids": job_ids, "n": n, "spm": STORIES_PER_MINUTE},
    )
    await session.execute(
        text(
            "INSERT INTO requests (job_id, task_id, kind, model, provider, outcome, error_class, "
            "status, attempt, prompt_tokens, completion_tokens, cost_usd, latency_s, "
            "finish_reason, created_at) "
            "SELECT s.job_id, s.task_id, 'story', s.model, 'openai', 'ok', NULL, 200, "
            "CASE WHEN s.id % 10 = 0 THEN 2 ELSE 1 END, 180, 220, 0.0004, s.latency_s, 'stop', "
            "s.created_at FROM stories s WHERE s.job_id = ANY(:ids) "
            "UNION ALL "
            "SELECT s.job_id, s.task_id, 'story', s.model, 'openai', 'error', 'rate_limit', "
            "429, 1, 0, 0, 0, 0.05, NULL, s.created_at FROM stories s "
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


async def seed_stage(engine: Any, sessionmaker: Any, *, stories: int, seeded: int) -> dict:
    """Grow the store from `seeded` to `stories` stories; the row counts after VACUUM ANALYZE."""
    async with sessionmaker() as session:
        ids = await seed_jobs(
            session,
            first=seeded // STORIES_PER_JOB,
            count=(stories - seeded) // STORIES_PER_JOB,
        )
        await seed_rows(session, job_ids=ids, pending_per_job=5_000)
        await seed_rollups_and_counters(session, stories=stories)
        await session.commit()
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    async with sessionmaker() as session:
        counts = {
            table: (await session.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()
            for table in ("stories", "requests", "rollups_minute")
        }
    return counts
