"""The /admin dashboard: auth, figures against the API and rollups, job actions."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from service.dashboard import COOKIE_NAME
from service.dashboard.data import latency_bucket_bound, latency_percentile
from tests.service.conftest import TEST_TOKEN

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
MODEL = "simulator-story-1"


def build_app(settings: Any) -> Any:
    """The service app with the dashboard and metrics installed."""
    from service.api import create_app
    from service.api.metrics import install_metrics
    from service.dashboard import install

    app = create_app(settings)
    install(app)
    install_metrics(app)
    install(app)  # a second call (the factory may already install them) adds nothing
    install_metrics(app)
    return app


@pytest_asyncio.fixture
async def client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """ASGI client without credentials (each test adds them where it means to)."""
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


async def seed_jobs(
    client: httpx.AsyncClient, settings: Any, simulator_url: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A completed job and a running one (some stories made, tasks pending, no worker)."""
    from service.work.wiring import run_worker, worker_config

    s = settings.model_copy(update={"simulator_base_url": simulator_url})
    config = worker_config(s, idle_exit=True, concurrency=8, poll_s=0.05)
    body = {"model": MODEL, "seed": 5, "budget_usd": 5.0}
    done = (
        await client.post(
            "/v1/jobs", json={**body, "n_stories": 12, "name": "finished"}, headers=AUTH
        )
    ).json()
    await run_worker(s, config=config, install_signals=False)
    live = (
        await client.post("/v1/jobs", json={**body, "n_stories": 400, "name": "live"}, headers=AUTH)
    ).json()
    worker = asyncio.create_task(run_worker(s, config=config, install_signals=False))
    for _ in range(400):
        job = (await client.get(f"/v1/jobs/{live['id']}", headers=AUTH)).json()
        if job["completed"] + job["rejected"] + job["failed"] >= 5:
            break
        await asyncio.sleep(0.02)
    assert (await client.post(f"/v1/jobs/{live['id']}/pause", headers=AUTH)).status_code == 200
    await asyncio.wait_for(worker, timeout=30)
    resumed = await client.post(f"/v1/jobs/{live['id']}/resume", headers=AUTH)
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    done = (await client.get(f"/v1/jobs/{done['id']}", headers=AUTH)).json()
    live = resumed.json()
    assert done["status"] == "completed"
    assert 0 < live["completed"] + live["rejected"] + live["failed"] < 400
    return done, live


def test_latency_percentile_interpolates_inside_buckets() -> None:
    # 10 requests <= 0.25 s and 10 in (0.25, 0.5]: the median is the 0.25 s edge,
    # p75 is halfway through the second bucket.
    buckets = [10, 10, 0, 0, 0, 0, 0, 0]
    assert latency_percentile(buckets, 0.5) == pytest.approx(0.25)
    assert latency_percentile(buckets, 0.75) == pytest.approx(0.375)
    assert latency_percentile([0] * 8, 0.5) is None
    assert latency_percentile([0, 0, 0, 0, 0, 0, 0, 4], 0.99) == pytest.approx(30.0)
    assert latency_bucket_bound(buckets, 0.5) == 0.25
    assert latency_bucket_bound(buckets, 0.75) == 0.5
    assert latency_bucket_bound([0, 0, 0, 0, 0, 0, 0, 4], 0.5) is None


async def test_without_token_the_page_is_a_login_form_and_data_is_refused(client) -> None:
    page = await client.get("/admin")
    assert page.status_code == 401
    assert 'name="token"' in page.text and 'action="/admin/login"' in page.text
    assert "initial-data" not in page.text and "Jobs" not in page.text
    wrong = await client.get("/admin", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and 'name="token"' in wrong.text
    client.cookies.set(COOKIE_NAME, "nope")
    for section in ("overview", "rates", "cost", "health", "jobs"):
        resp = await client.get(f"/admin/data/{section}")
        assert resp.status_code == 401
        assert resp.json() == {"error": "missing or wrong admin token", "field": "authorization"}
    assert (await client.get("/metrics")).status_code == 401
    refused = await client.post("/admin/login", data={"token": "nope"})
    assert refused.status_code == 401 and "Wrong token." in refused.text
    assert COOKIE_NAME not in refused.headers.get("set-cookie", "")


async def test_login_sets_an_httponly_cookie_that_opens_the_page(client) -> None:
    resp = await client.post("/admin/login", data={"token": TEST_TOKEN})
    assert resp.status_code == 303 and resp.headers["location"] == "/admin"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    page = await client.get("/admin")  # the client keeps the cookie
    assert page.status_code == 200 and 'id="initial-data"' in page.text
    data = await client.get("/admin/data/overview")
    assert data.status_code == 200 and data.json()["simulator"] is True
    out = await client.post("/admin/logout")
    assert out.status_code == 303
    client.cookies.clear()
    assert (await client.get("/admin/data/overview")).status_code == 401
    js = await client.get("/admin/static/dashboard.js")
    assert js.status_code == 200 and "text/javascript" in js.headers["content-type"]
    assert (await client.get("/admin/static/__init__.py")).status_code == 404


async def test_page_and_data_match_the_jobs_and_rollups(client, settings, simulator_url) -> None:
    from service.db import make_engine, make_sessionmaker
    from service.store import rollup_totals

    done, live = await seed_jobs(client, settings, simulator_url)

    page = await client.get("/admin", headers=AUTH)
    assert page.status_code == 200
    html = page.text
    assert (
        'id="simulator-banner"' in html
        and 'id="simulator-banner" class="banner" role="alert" hidden' not in html
    )
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r'<tr data-job="([0-9a-f-]+)".*?</tr>', html, re.S)
    }
    assert set(rows) == {done["id"], live["id"]}
    assert 'data-action="cancel"' not in rows[done["id"]]
    assert 'data-action="cancel"' in rows[live["id"]] and 'data-action="pause"' in rows[live["id"]]

    get = lambda s: client.get(f"/admin/data/{s}", headers=AUTH)  # noqa: E731
    overview, rates, cost, health, jobs = [
        (await get(s)).json() for s in ("overview", "rates", "cost", "health", "jobs")
    ]
    engine = make_engine(settings.database_url, pool_size=1)
    async with make_sessionmaker(engine)() as session:
        totals = await rollup_totals(session=session)
    await engine.dispose()

    by_id = {j["id"]: j for j in jobs["jobs"]}
    assert by_id[done["id"]]["actions"] == [] and by_id[done["id"]]["progress"] == 1.0
    assert by_id[live["id"]]["actions"] == ["pause", "cancel"]
    live_done = live["completed"] + live["rejected"] + live["failed"]
    assert by_id[live["id"]]["done"] == live_done
    assert by_id[live["id"]]["progress"] == pytest.approx(live_done / 400)
    assert by_id[live["id"]]["eta_seconds"] > 0

    assert overview["simulator"] is True and overview["provider"] == "simulator"
    assert overview["queue"] == {"pending": 400 - live_done, "running": 0}
    assert overview["stories"]["accepted"] == done["completed"] + live["completed"]
    assert overview["stories"]["rejected"] == done["rejected"] + live["rejected"]
    assert overview["workers_alive"] == 0 and overview["workers"]  # stopped workers are listed

    (model,) = [m for m in rates["models"] if m["model"] == MODEL]
    # The window follows the running job (at least five minutes, one point a minute).
    window = rates["window"]
    assert window["key"] == "job" and window["label"] == "active jobs"
    assert len(model["series"]) == int(window["minutes"] // window["bucket_minutes"]) + 1 >= 6
    assert sum(p["requests"] for p in model["series"]) == totals["requests"]
    assert model["window"]["requests"] == totals["requests"]
    assert model["window"]["requests_per_minute"] == pytest.approx(
        totals["requests"] / window["minutes"]
    )
    assert model["window"]["use_requests"] is None  # no limit configured
    assert model["since_start"]["requests"] == totals["requests"] > 0
    assert model["last_hour"]["requests_per_minute"] > 0
    quarter = (await client.get("/admin/data/rates?window=15m", headers=AUTH)).json()
    assert quarter["window"]["minutes"] == pytest.approx(15) and len(
        quarter["models"][0]["series"]
    ) in (15, 16)
    bad = await client.get("/admin/data/rates?window=2d", headers=AUTH)
    assert bad.status_code == 422 and bad.json()["field"] == "window"
    assert model["limits"] == {"rpm": None, "tpm": None}

    spent = done["cost_usd"] + live["cost_usd"]
    assert cost["spent_usd"] == pytest.approx(spent)
    assert cost["spent_usd"] == pytest.approx(float(totals["cost_usd"]), rel=1e-6)
    accepted = done["completed"] + live["completed"]
    assert cost["cost_per_1000_accepted"] == pytest.approx(spent / accepted * 1000)
    assert cost["budget_left_usd"] == pytest.approx(5.0 - live["cost_usd"] - live["reserved_usd"])
    jobs_cost = {j["id"]: j for j in cost["per_job"]}
    expected = live["cost_usd"] / live_done * (400 - live_done)
    assert jobs_cost[live["id"]]["projected_to_finish_usd"] == pytest.approx(expected)
    assert jobs_cost[done["id"]]["projected_to_finish_usd"] is None

    since = health["since_start"]
    assert since["requests"] == totals["requests"]
    assert since["errors"] == totals["errors"]
    assert since["stories_accepted"] == totals["stories_accepted"] == accepted
    assert sum(since["latency"]["counts"]) == totals["requests"]
    assert (
        since["latency"]["p50_s"] is not None
        and since["latency"]["p99_s"] >= since["latency"]["p50_s"]
    )
    assert since["duplicate_rate"] == pytest.approx(since["duplicates"] / accepted)
    rejected = sum(since["rejections_by_reason"].values())
    assert (rejected >= since["stories_rejected"]) if since["stories_rejected"] else rejected == 0


async def test_limits_come_from_settings(settings) -> None:
    limited = settings.model_copy(update={"model_limits": {MODEL: {"rpm": 600, "tpm": 90000}}})
    app = build_app(limited)
    assert [getattr(r, "path", None) for r in app.routes].count("/metrics") == 1
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            rates = (await c.get("/admin/data/rates", headers=AUTH)).json()
    (model,) = rates["models"]
    assert model["model"] == MODEL and model["limits"] == {"rpm": 600, "tpm": 90000}
    assert model["since_start"]["requests"] == 0


async def test_job_actions_follow_the_api_rules(client) -> None:
    job = (
        await client.post(
            "/v1/jobs",
            json={"n_stories": 5, "model": MODEL, "seed": 1, "budget_usd": 1.0},
            headers=AUTH,
        )
    ).json()
    url = f"/admin/jobs/{job['id']}"
    assert (await client.post(f"{url}/cancel")).status_code == 401
    forged = await client.post(f"{url}/cancel", headers=AUTH)
    assert forged.status_code == 403  # no action header: a cross-site form cannot send it
    paused = await client.post(f"{url}/pause", headers={**AUTH, "X-Dashboard-Action": "pause"})
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    cancel = await client.post(f"{url}/cancel", headers={**AUTH, "X-Dashboard-Action": "cancel"})
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    again = await client.post(f"{url}/cancel", headers={**AUTH, "X-Dashboard-Action": "cancel"})
    assert again.status_code == 409 and again.json()["field"] == "action"
    api_view = (await client.get(f"/v1/jobs/{job['id']}", headers=AUTH)).json()
    assert api_view["status"] == "cancelled"
    bad = await client.post(
        "/admin/jobs/not-a-uuid/cancel", headers={**AUTH, "X-Dashboard-Action": "cancel"}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "job_id"
    jobs = (await client.get("/admin/data/jobs", headers=AUTH)).json()["jobs"]
    assert jobs[0]["status"] == "cancelled" and jobs[0]["actions"] == []
    # A finished job shows no rate of any kind: its last minutes are history, not speed.
    rates = {k: v for k, v in jobs[0].items() if k.endswith("_per_minute")}
    assert "requests_per_minute" in rates and "stories_per_minute" in rates
    assert set(rates.values()) == {None}
    overview = (await client.get("/admin/data/overview", headers=AUTH)).json()
    assert overview["queue"]["pending"] == 0
    assert (await client.get("/admin/data/nope", headers=AUTH)).status_code == 404


async def test_since_start_totals_keep_settled_minutes(sessionmaker) -> None:
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from service.dashboard.history import SinceStart, read_window
    from service.store.rollups import RollupBatch, upsert_rollups

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    job_id = uuid.uuid4()

    async def add(session: Any, minutes_ago: int, *, model: str, latency_s: float) -> None:
        batch = RollupBatch()
        batch.add_request(
            job_id=job_id, model=model, started_at=now - timedelta(minutes=minutes_ago),
            outcome="error" if latency_s > 1 else "ok",
            error_class="server_error" if latency_s > 1 else None, status=None, attempt=1,
            prompt_tokens=10, completion_tokens=20, cost_usd=Decimal("0.001"), latency_s=latency_s,
        )  # fmt: skip
        await upsert_rollups(session=session, batch=batch)

    async with sessionmaker() as session:
        await session.execute(
            text(
                "INSERT INTO jobs (id, n_stories, models, template_version, max_tokens, seed, "
                "budget_usd, provider) VALUES (:id, 1, '[]', 'v1', 10, 1, 1, 'simulator')"
            ),
            {"id": job_id},
        )
        for ago, model, latency in ((90, "a", 0.1), (40, "a", 3.0), (20, "b", 0.3), (2, "a", 0.1)):
            await add(session, ago, model=model, latency_s=latency)
        await session.commit()
        history = SinceStart()
        first = await history.read(session=session, now=now)
        full = await read_window(session=session, since=None, before=None)
        assert first == full
        assert first.models["a"].requests == 3 and first.models["b"].requests == 1
        assert first.all_health().errors_by_class == {"server_error": 1}
        assert first.all_health().latency_buckets[:3] == [2, 1, 0]
        # Ten minutes later: the settled part grows by the minutes that closed meanwhile.
        await add(session, 1, model="b", latency_s=0.1)
        await session.commit()
        later = await history.read(session=session, now=now + timedelta(minutes=10))
        assert later == await read_window(session=session, since=None, before=None)
        assert later.models["b"].requests == 2 and later.all_health().requests == 5


async def seed_pool_and_batches(database_url: str, job_id: str) -> None:
    """Two live workers' pool snapshots (and a stopped one's), four batches of `job_id`."""
    import json

    from service.db import make_engine, make_sessionmaker

    leak = "auth (status 401): Incorrect API key provided: sk-live-0123456789abcdef"
    seen = [  # two live workers disagree about the member; a stopped one is not counted
        ("w1", "running", "open", 10, leak, 200.0),
        ("w2", "running", "closed", 30, "server_error (status 500): boom", 100.0),
        ("w3", "stopped", "open", 99, "stale", 300.0),
    ]
    engine = make_engine(database_url, pool_size=1)
    async with make_sessionmaker(engine)() as session, session.begin():
        for wid, status, state, n, error, at in seen:
            m = {"name": "azure", "state": state, "requests": n, "errors": 2, "successes": n - 2}
            m |= {"requests_per_minute": 30.0, "last_error": error, "last_error_at": at}
            await session.execute(
                text(
                    "INSERT INTO workers (id, host, pid, concurrency, status, providers) "
                    "VALUES (:id, 'h', 1, 4, :status, CAST(:p AS jsonb))"
                ),
                {"id": wid, "status": status, "p": json.dumps([{"model": MODEL, "members": [m]}])},
            )
        for state, cost, online, error, member in [
            ("building", 0, 0, None, None),  # no member before its upload
            ("submitted", 0, 0, None, "azure"),
            ("done", "0.25", "0.5", None, "azure"),
            ("done", 0, 0, "expired", "openai"),
        ]:
            await session.execute(
                text(
                    "INSERT INTO provider_batches (key, job_id, model, state, task_ids, "
                    "cost_usd, online_cost_usd, last_error, member) VALUES (gen_random_uuid(), "
                    ":j, :m, :s, '{}', :c, :o, :e, :member)"
                ),
                {
                    "j": job_id,
                    "m": MODEL,
                    "s": state,
                    "c": cost,
                    "o": online,
                    "e": error,
                    "member": member,
                },
            )
    await engine.dispose()


async def test_providers_and_batches_panels(client, settings) -> None:
    """Pool members merged over live workers (worst state, sums, newest error redacted) and
    batch jobs with their batches by state and the money saved."""
    get = lambda s: client.get(f"/admin/data/{s}", headers=AUTH)  # noqa: E731
    assert (await get("providers")).json() == {"workers": 0, "pools": []}
    assert (await get("batches")).json()["jobs"] == []
    job = (
        await client.post(
            "/v1/jobs",
            json={"n_stories": 9, "model": MODEL, "budget_usd": 1.0, "mode": "batch"},
            headers=AUTH,
        )
    ).json()
    await seed_pool_and_batches(settings.database_url, job["id"])
    providers = (await get("providers")).json()
    (pool,) = providers["pools"]
    (azure,) = pool["members"]
    assert (providers["workers"], pool["healthy"]) == (2, 0)
    assert (azure["state"], azure["workers"], azure["workers_open"]) == ("open", 2, 1)
    assert (azure["requests"], azure["errors"], azure["requests_per_minute"]) == (40, 4, 60.0)
    assert azure["last_error"].startswith("auth (status 401): Incorrect API key provided")
    assert "sk-live" not in azure["last_error"]
    batches = (await get("batches")).json()
    (row,) = batches["jobs"]
    assert row["id"] == job["id"]
    expected = {"batches": 4, "preparing": 1, "in_progress": 1, "completed": 1, "failed": 1}
    assert {k: row[k] for k in expected} == expected
    assert row["saved_usd"] == pytest.approx(0.25) and batches["totals"]["jobs"] == 1
    assert row["members"] == {"azure": 2, "openai": 1}
    api_view = (await client.get(f"/v1/jobs/{job['id']}", headers=AUTH)).json()["batches"]
    assert {k: api_view[k] for k in expected} == expected  # the same figures as the API
    assert api_view["members"] == row["members"]
    page = (await client.get("/admin", headers=AUTH)).text
    assert 'id="providers-section"' in page and 'id="batches-section"' in page
