"""Story browser and diversity endpoints with many stored stories.

Seeds an embedded Postgres with one job's stories (`INSERT ... SELECT generate_series`): real
TinyStories texts (the 1,200-story sample) each behind an opening made of a name and the
story's recipe words, so openings are far more varied than in real data (the diversity terms
table is at its largest); recipe words from the packaged vocabulary, features at the default
mix, 5% rejected, 3% near duplicates in clusters. The diversity sums are then written by the
real write path (store.diversity.record_stories, in blocks of 5,000 stories), timed.

measure_browser: /admin/stories under each filter (none, job, rejected, a check, duplicates,
a feature, a rare recipe word, a common and a rare text search, a page deep in the middle) and
one story with its cluster. measure_diversity: /admin/data/diversity, /v1/diversity and
/v1/jobs/{id}/diversity. Each through the ASGI app; p50 in ms over all requests.

    python benchmarks/bench_browser.py [--quick] [--stories N]
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
SAMPLE = Path(__file__).resolve().parents[1] / "tests/service/data/TinyStories-train-sample1200.txt"
NAMES = ["Lily", "Ben", "Tom", "Mia", "Sam", "Anna", "Max", "Sue", "Tim", "Zoe", "Leo", "Amy"]

_SEED = text(
    """
    INSERT INTO stories (job_id, text, verb, noun, adjective, features, prompt, model, provider,
        prompt_tokens, completion_tokens, cost_usd, latency_s, finish_reason, checks, accepted,
        rejection_reasons, text_hash, dedup_status, dedup_cluster_id, nn_jaccard, source)
    SELECT :job,
        a.names[1 + i % 12] || ' saw the ' || a.adjs[1 + (i * 7) % :na] || ' '
            || a.nouns[1 + (i * 13) % :nn] || '. ' || a.texts[1 + i % :nt],
        a.verbs[1 + (i * 31) % :nv], a.nouns[1 + (i * 13) % :nn], a.adjs[1 + (i * 7) % :na],
        CASE WHEN i % 2 = 0 THEN '["Dialogue"]'::jsonb ELSE '[]'::jsonb END
            || CASE WHEN i % 10 = 3 THEN '["BadEnding"]'::jsonb ELSE '[]'::jsonb END,
        'Write a short story (3-5 paragraphs) ...', 'gpt-4o-mini', 'simulator', 120, 260,
        0.0002, 1.2, 'stop',
        jsonb_build_object('accepted', i % 20 <> 0,
            'details', jsonb_build_object('oov_share', (i % 50) / 1000.0)),
        i % 20 <> 0,
        CASE WHEN i % 20 = 0 THEN CASE WHEN i % 100 = 0 THEN '["too_short"]'::jsonb
             ELSE '["missing_words"]'::jsonb END ELSE '[]'::jsonb END,
        md5(i::text),
        CASE WHEN i % 20 = 0 THEN NULL WHEN i % 33 = 1 THEN 'near_duplicate' ELSE 'unique' END,
        CASE WHEN i % 20 <> 0 AND i % 33 = 1 THEN CAST(:first AS bigint) + (i / 330) * 330 END,
        CASE WHEN i % 20 = 0 THEN NULL WHEN i % 33 = 1 THEN 0.45 ELSE 0.0 END,
        'generated'
    FROM (SELECT CAST(:names AS text[]) AS names, CAST(:adjs AS text[]) AS adjs,
                 CAST(:nouns AS text[]) AS nouns, CAST(:verbs AS text[]) AS verbs,
                 CAST(:texts AS text[]) AS texts) AS a,
         generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS i
    """
)


async def seed(engine: Any, sessionmaker: Any, *, stories: int) -> tuple[uuid.UUID, float]:
    """One job and its stories, then their diversity sums by the real write path."""
    from decimal import Decimal

    from service import store
    from service.store.diversity import record_stories
    from vocab import default_vocabulary

    voc = default_vocabulary()
    texts = [t.strip() for t in SAMPLE.read_text().split("<|endoftext|>") if t.strip()]
    job_id = uuid.uuid4()
    async with sessionmaker() as s, s.begin():
        await store.create_job(
            session=s,
            job_id=job_id,
            fields={
                "n_stories": stories, "models": [{"model": "gpt-4o-mini", "weight": 1.0}],
                "template_version": "v1", "max_tokens": 600, "seed": 1,
                "budget_usd": Decimal(1000), "provider": "simulator", "status": "completed",
            },
        )  # fmt: skip
        next_id = text("SELECT COALESCE(max(id), 0) + 1 FROM stories")
        first = int((await s.execute(next_id)).scalar())
    params = {
        "job": job_id, "names": NAMES, "texts": texts, "nt": len(texts), "first": first,
        "verbs": list(voc.verbs), "nv": len(voc.verbs), "nouns": list(voc.nouns),
        "nn": len(voc.nouns), "adjs": list(voc.adjectives), "na": len(voc.adjectives),
    }  # fmt: skip
    for lo in range(0, stories, 100_000):
        async with sessionmaker() as s, s.begin():
            await s.execute(_SEED, {**params, "lo": lo, "hi": min(lo + 100_000, stories)})
    async with engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.execute(text("VACUUM ANALYZE stories"))
    start = time.perf_counter()
    ids = list(range(first, first + stories))
    for lo in range(0, stories, 5_000):
        block = [i for i in ids[lo : lo + 5_000] if i % 20 != first % 20]
        async with sessionmaker() as s, s.begin():
            await record_stories(session=s, nearest={i: 0.0 for i in block})
    return job_id, time.perf_counter() - start


async def _p50(client: httpx.AsyncClient, paths: list[str], repeats: int) -> tuple[float, dict]:
    timings: dict[str, list[float]] = {p: [] for p in paths}
    for path in paths:  # one warm-up each
        response = await client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
    for _ in range(repeats):
        for path in paths:
            start = time.perf_counter()
            response = await client.get(path)
            timings[path].append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200
    every = [t for ts in timings.values() for t in ts]
    return statistics.median(every), {p: statistics.median(ts) for p, ts in timings.items()}


async def measure_browser(
    client: httpx.AsyncClient, *, job_id: uuid.UUID, stories: int, repeats: int = 10
) -> dict[str, Any]:
    """p50 ms of /admin/stories under each filter and of one story page."""
    middle = stories // 2
    paths = [
        "/admin/stories",
        f"/admin/stories?job={job_id}",
        "/admin/stories?status=rejected",
        "/admin/stories?check=too_short",
        "/admin/stories?dup=near",
        "/admin/stories?feature=BadEnding",
        "/admin/stories?word=zebra",
        "/admin/stories?q=little+girl",
        "/admin/stories?q=xylophone+tree",
        f"/admin/stories?before={middle}",
        f"/admin/stories/{middle + 1}",
    ]
    p50, per_path = await _p50(client, paths, repeats)
    return {"browser_p50_ms": p50, "per_path": per_path}


async def measure_diversity(
    client: httpx.AsyncClient, *, job_id: uuid.UUID, repeats: int = 10
) -> dict[str, Any]:
    """p50 ms of the diversity report: dashboard block, overall and per job."""
    paths = ["/admin/data/diversity", "/v1/diversity", f"/v1/jobs/{job_id}/diversity"]
    p50, per_path = await _p50(client, paths, repeats)
    return {"diversity_p50_ms": p50, "per_path": per_path}


async def run(stories: int, repeats: int) -> dict[str, Any]:
    from service.api import create_app
    from service.db import make_engine, make_sessionmaker
    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, ensure_database
    from service.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    server = EmbeddedPostgres(root / "pg", extra_options=FAST_PG)
    try:
        info = server.ensure_running()
        ensure_database(info.url(driver="postgresql"), "bench")
        url = info.url("bench")
        await asyncio.to_thread(upgrade, url)
        engine = make_engine(url, pool_size=4)
        sessionmaker = make_sessionmaker(engine)
        start = time.perf_counter()
        job_id, record_s = await seed(engine, sessionmaker, stories=stories)
        print(
            f"seeded {stories:,} stories in {time.perf_counter() - start:.1f}s; diversity sums "
            f"written by the real path at {stories / record_s:,.0f} stories/s",
            flush=True,
        )
        settings = Settings(database_url=url, admin_token=TOKEN, home=root / "home", _env_file=None)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://bench",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=60,
            ) as client:
                browser = await measure_browser(
                    client, job_id=job_id, stories=stories, repeats=repeats
                )
                diversity = await measure_diversity(client, job_id=job_id, repeats=repeats)
        await engine.dispose()
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    for name, figures in (("browser", browser), ("diversity", diversity)):
        for path, ms in figures["per_path"].items():
            print(f"  {name} {path}: {ms:.1f} ms")
    return {
        "stories": stories,
        "record_stories_per_s": stories / record_s,
        "browser_p50_ms": browser["browser_p50_ms"],
        "diversity_p50_ms": diversity["diversity_p50_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 stories")
    parser.add_argument("--stories", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    stories = 20_000 if args.quick else args.stories
    got = asyncio.run(run(stories, args.repeats))
    print(
        f"browser: browser_p50_ms={got['browser_p50_ms']:.1f} "
        f"diversity_p50_ms={got['diversity_p50_ms']:.1f}"
    )


if __name__ == "__main__":
    main()
