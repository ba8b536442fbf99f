"""Chaos: stories and money under SIGKILLs, 429/500 storms and slow answers.

Three workers share one Postgres queue; every ~5 s one of them, at random, is SIGKILLed and
restarted. They call the simulator (10% 429s, 5% 500s, log-normal latency with a slow tail)
through a counting proxy that adds up, per model, the usage of every answer the provider
billed: also of answers whose caller was killed before they arrived. Two jobs run together:

- a 2,000-story job (model simulator-story-1, a budget it never reaches);
- a budget-bound job (model simulator-story-mini-1, same price, higher priority, 10x more
  stories than its budget pays for).

Measured:

- lost: tasks of the big job that ended with neither a story nor a recorded failure, plus
  stories whose task is not done; duplicated: tasks with more than one story;
- unrecorded_usd: what the provider billed beyond what the database recorded (both jobs);
- overspend_usd: what the provider billed for the budget-bound job beyond its budget;
- budget_completion: stories the budget-bound job made over the stories its budget covers at
  its measured mean cost of a story (what its answered calls cost per story it made), once
  the calls the kills cut short are paid for (charged at their reservation: the slack the
  kills are allowed); stories_over_whole_budget (information) leaves that charge in;
- overcharged_usd (information): recorded minus billed: calls cut short by a kill are charged
  at their reservation (a job's mean story length with a margin once it has made 5 stories,
  the worst case before).

    python benchmarks/bench_chaos.py [--quick]

Last line: `chaos: lost=0 duplicated=0 unrecorded_usd=X overspend_usd=Y budget_completion=Z`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from service_procs import base_env, free_port, spawn, stop

FAST_PG = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
BIG_MODEL, BUDGET_MODEL = "simulator-story-1", "simulator-story-mini-1"
WORKERS = 3


# ---- the counting proxy (its own process) -----------------------------------------------------


def proxy_main(upstream: str, port: int) -> None:
    """Forward chat completions to `upstream`; count billed usage per model, even when the
    caller has gone (the upstream call runs in its own task, shielded from the caller)."""
    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    billed: dict[str, dict[str, int]] = {}
    state = {"in_flight": 0, "answered": 0, "requests": 0}
    client = httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=1000))
    kept = ("authorization", "content-type", "x-simulator-fault")

    async def call(body: bytes, headers: dict[str, str]) -> httpx.Response:
        state["in_flight"] += 1
        try:
            resp = await client.post(f"{upstream}/chat/completions", content=body, headers=headers)
            if resp.status_code == 200:
                try:
                    usage = resp.json()["usage"]
                    model = json.loads(body)["model"]
                except (ValueError, KeyError, TypeError):
                    return resp
                row = billed.setdefault(model, {"prompt": 0, "completion": 0, "answers": 0})
                row["prompt"] += int(usage.get("prompt_tokens") or 0)
                row["completion"] += int(usage.get("completion_tokens") or 0)
                row["answers"] += 1
                state["answered"] += 1
            return resp
        finally:
            state["in_flight"] -= 1

    async def chat(request: Request) -> Response:
        state["requests"] += 1
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() in kept}
        resp = await asyncio.shield(asyncio.ensure_future(call(body, headers)))
        out = {
            k: v
            for k, v in resp.headers.items()
            if k.lower().startswith(("retry-after", "x-ratelimit-", "content-type"))
        }
        return Response(resp.content, resp.status_code, headers=out)

    async def stats(request: Request) -> Response:
        return JSONResponse({"billed": billed, **state})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/proxy/stats", stats, methods=["GET"]),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def proxy_stats(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/proxy/stats", timeout=30).json()


# ---- the run --------------------------------------------------------------------------------


async def create_jobs(url: str, n_big: int, budget_stories: int) -> tuple[str, str, Decimal]:
    """The big job and the budget-bound one (its budget sized from list prices, ~`budget_stories`
    stories of ~200 completion tokens)."""
    from generator.pricing import PriceTable
    from service import store
    from service.db import make_engine, make_sessionmaker
    from service.store.jobs import TaskSpec, money
    from vocab import RecipeSampler

    sampler = RecipeSampler()
    budget = money(PriceTable.load().cost(BUDGET_MODEL, 90, 200) * budget_stories)
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    ids = []
    for model, n, usd, priority, seed in (
        (BIG_MODEL, n_big, Decimal(100), 0, 1),
        (BUDGET_MODEL, budget_stories * 10, budget, 1, 2),
    ):
        job_id = uuid.uuid4()
        async with sessions() as s, s.begin():
            await store.create_job(
                session=s,
                job_id=job_id,
                fields={
                    "n_stories": n,
                    "models": [{"model": model, "weight": 1.0}],
                    "template_version": "v1",
                    "max_tokens": 600,
                    "seed": seed,
                    "budget_usd": usd,
                    "priority": priority,
                    "provider": "simulator",
                },
                tasks=[
                    TaskSpec(index=i, recipe=sampler.recipe(seed, i).to_dict(), model=model)
                    for i in range(n)
                ],
            )
        ids.append(str(job_id))
    await engine.dispose()
    return ids[0], ids[1], budget


def query(url: str, sql: str, *args: object) -> list[tuple]:
    import psycopg

    from service.store.exports import libpq_url

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def job(url: str, job_id: str) -> dict:
    ((status, done, failed, spent, budget, reserved),) = query(
        url,
        "SELECT status, completed + rejected, failed, spent_usd, budget_usd, reserved_usd "
        "FROM jobs WHERE id = %s",
        job_id,
    )
    return {
        "status": status,
        "done": done,
        "failed": failed,
        "spent": Decimal(spent),
        "budget": Decimal(budget),
        "reserved": Decimal(reserved),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="400 + ~150 stories (1-2 minutes)")
    ap.add_argument("--kill-every", type=float, default=5.0, help="seconds between SIGKILLs")
    ap.add_argument("--proxy", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.proxy:
        proxy_main(args.proxy[0], int(args.proxy[1]))
        return

    from generator.pricing import PriceTable
    from generator.simulator import SimulatorConfig, run_simulator
    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, ensure_database

    n_big, budget_stories = (400, 150) if args.quick else (2000, 400)
    root = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    server = EmbeddedPostgres(root / "pg", extra_options=FAST_PG)
    procs: list[subprocess.Popen] = []
    proxy = None
    rng = random.Random(15)
    try:
        info = server.ensure_running()
        ensure_database(info.url(driver="postgresql"), "chaos")
        url = info.url("chaos")
        upgrade(url)
        big, bounded, _budget = asyncio.run(create_jobs(url, n_big, budget_stories))
        config = SimulatorConfig(
            rate_429=0.10, rate_500=0.05, latency_median_s=0.3, latency_p99_s=3.0, seed=15
        )
        with run_simulator(config, subprocess_mode=True) as sim_url:
            port = free_port()
            proxy = subprocess.Popen(
                [sys.executable, __file__, "--proxy", sim_url, str(port)],
                stdout=subprocess.DEVNULL,
                stderr=(root / "proxy.log").open("wb"),
            )
            proxy_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    proxy_stats(proxy_url)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise SystemExit("the counting proxy did not start") from None
                    time.sleep(0.1)
            env = base_env(
                url,
                root / "home",
                f"{proxy_url}/v1",
                TINYSTORIES_LEASE_SECONDS="60",
                TINYSTORIES_HEARTBEAT_SECONDS="1",
                TINYSTORIES_REAPER_SECONDS="1",
                TINYSTORIES_MAX_ATTEMPTS="12",
                TINYSTORIES_SHUTDOWN_GRACE_SECONDS="5",
            )
            logs = [root / f"worker{i}.log" for i in range(WORKERS)]
            procs = [spawn(["worker", "--concurrency", "16"], env, log) for log in logs]
            kills, start = 0, time.monotonic()
            next_kill = start + args.kill_every
            progress, last_change = -1, time.monotonic()
            while True:
                time.sleep(0.5)
                a, b = job(url, big), job(url, bounded)
                if a["status"] not in ("queued", "running") and b["status"] not in (
                    "queued",
                    "running",
                ):
                    break
                now_progress = a["done"] + a["failed"] + b["done"] + b["failed"]
                if now_progress != progress:
                    progress, last_change = now_progress, time.monotonic()
                if time.monotonic() - last_change > 180:
                    raise SystemExit(f"no progress for 180 s: {a} {b}")
                if time.monotonic() >= next_kill:
                    victim = rng.randrange(WORKERS)
                    procs[victim].kill()
                    procs[victim].wait()
                    kills += 1
                    procs[victim] = spawn(["worker", "--concurrency", "16"], env, logs[victim])
                    next_kill = time.monotonic() + rng.uniform(0.8, 1.2) * args.kill_every
            elapsed = time.monotonic() - start
            stop(procs)
            procs = []
            # The dead workers' last calls are billed too: wait for the provider to answer them.
            deadline = time.monotonic() + 120
            while proxy_stats(proxy_url)["in_flight"] and time.monotonic() < deadline:
                time.sleep(0.2)
            billed_tokens = proxy_stats(proxy_url)["billed"]
    finally:
        stop(procs)
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)

    try:
        pricing = PriceTable.load()
        billed = {
            m: Decimal(repr(pricing.cost(m, row["prompt"], row["completion"])))
            for m, row in billed_tokens.items()
        }
        a, b = job(url, big), job(url, bounded)
        ((lost_tasks, orphans, doubles, intents),) = query(
            url,
            "SELECT (SELECT count(*) FROM tasks t WHERE t.job_id = %s AND (t.status NOT IN "
            "('done', 'failed') OR (t.status = 'done' AND NOT EXISTS "
            "(SELECT 1 FROM stories s WHERE s.task_id = t.id)))), "
            "(SELECT count(*) FROM stories s JOIN tasks t ON t.id = s.task_id "
            "WHERE t.status <> 'done'), "
            "(SELECT count(*) FROM (SELECT task_id FROM stories GROUP BY task_id "
            "HAVING count(*) > 1) d), "
            "(SELECT count(*) FROM requests WHERE error_class = 'unreconciled')",
            big,
        )
        cut_short_a, cut_short_b = (
            Decimal(
                query(
                    url,
                    "SELECT COALESCE(sum(cost_usd), 0) FROM requests "
                    "WHERE job_id = %s AND error_class = 'unreconciled'",
                    j,
                )[0][0]
            )
            for j in (big, bounded)
        )
        recorded = a["spent"] + b["spent"]
        billed_all = sum(billed.values(), Decimal(0))
        billed_bounded = billed.get(BUDGET_MODEL, Decimal(0))
        # A story's mean cost: what the job's answered calls cost per story it made.
        mean_a = (a["spent"] - cut_short_a) / max(a["done"], 1)
        mean = (b["spent"] - cut_short_b) / max(b["done"], 1)
        # What the budget covers once the calls the kills cut short are paid for (their charge
        # is the slack the kills are allowed; the rest must turn into stories).
        covered = (b["budget"] - cut_short_b) / mean if mean else Decimal(0)
        completion = float(b["done"] / covered) if covered else 0.0
        raw = float(b["done"] * mean / b["budget"]) if b["budget"] else 0.0
        unrecorded = max(billed_all - recorded, Decimal(0))
        overspend = max(Decimal(billed_bounded) - b["budget"], Decimal(0))
        print(
            f"kills={kills} elapsed_s={elapsed:.0f} big: {a['status']} stories={a['done']} "
            f"failed={a['failed']} | bounded: {b['status']} stories={b['done']} "
            f"budget_usd={b['budget']} billed_usd={billed_bounded} "
            f"cut_short_usd={cut_short_b} covers={float(covered):.1f} "
            f"stories_over_whole_budget={raw:.3f}"
        )
        print(
            f"recorded_usd={recorded} billed_usd={billed_all} "
            f"overcharged_usd={recorded - billed_all} unreconciled_calls_charged={intents} "
            f"mean_story_usd big={mean_a:.9f} bounded={mean:.9f}"
        )
        print(
            f"chaos: lost={lost_tasks + orphans} duplicated={doubles} "
            f"unrecorded_usd={unrecorded:.9f} overspend_usd={overspend:.9f} "
            f"budget_completion={completion:.3f}"
        )
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
