"""REST API behaviour: auth, validation, lifecycle transitions, pagination."""

from __future__ import annotations

import uuid

import httpx

from service.api import create_app
from tests.service.conftest import TEST_TOKEN


async def _submit(api: httpx.AsyncClient, **extra: object) -> dict:
    body = {"n_stories": 5, "model": "simulator-story-1", "seed": 1, "budget_usd": 1.0}
    body.update(extra)
    resp = await api.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def test_submit_creates_queued_job_with_tasks(api: httpx.AsyncClient) -> None:
    job = await _submit(api, n_stories=7, instruct=True)
    assert job["status"] == "queued"
    assert job["n_stories"] == 7 and job["pending"] == 7
    assert job["instruct"] is True and job["summary_model"] == "simulator-story-mini-1"
    assert job["models"] == [{"model": "simulator-story-1", "weight": 1.0}]
    assert job["provider"] == "simulator" and job["simulator"] is True
    for key in ("requests_per_minute", "tokens_per_minute", "eta_seconds", "cost_usd"):
        assert key in job
    listed = (await api.get("/v1/jobs")).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    assert listed["simulator"] is True


async def test_weighted_model_mix_is_deterministic(api: httpx.AsyncClient, sessionmaker) -> None:
    from sqlalchemy import text

    mix = {"simulator-story-1": 0.25, "simulator-story-mini-1": 0.75}
    from service import store

    a = await _submit(api, n_stories=200, model=None, models=mix, seed=5)
    b = await _submit(api, n_stories=200, model=None, models=mix, seed=5)
    async with sessionmaker() as s:
        # A job is one row when submitted: claims make its tasks and derive each one's
        # recipe and model from (seed, index).
        assert (await s.execute(text("SELECT count(*) FROM tasks"))).scalar_one() == 0
        claimed = await store.claim_tasks(session=s, worker_id="w", limit=1000, lease_s=60)
        await s.commit()
        assert len(claimed) == 400 and all(t.recipe and t.model for t in claimed)
        rows = (
            await s.execute(
                text("SELECT job_id, model, count(*) FROM tasks GROUP BY job_id, model")
            )
        ).all()
        per_job = {}
        for job_id, model, n in rows:
            per_job.setdefault(str(job_id), {})[model] = n
        same = (
            await s.execute(
                text(
                    "SELECT count(*) FROM tasks x JOIN tasks y ON x.index = y.index "
                    "WHERE x.job_id = :a AND y.job_id = :b AND x.model = y.model "
                    "AND x.recipe = y.recipe"
                ),
                {"a": a["id"], "b": b["id"]},
            )
        ).scalar_one()
    assert same == 200
    counts = per_job[a["id"]]
    assert 20 <= counts["simulator-story-1"] <= 80 and sum(counts.values()) == 200


async def test_missing_or_wrong_token_is_401(settings) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/v1/jobs")).status_code == 401
            bad = await client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).json()["status"] == "ready"
            assert (await client.get("/docs")).status_code == 200


async def test_validation_errors_name_the_field(api: httpx.AsyncClient) -> None:
    resp = await api.post("/v1/jobs", json={"n_stories": 0, "budget_usd": 1})
    assert resp.status_code == 422
    assert resp.json()["field"] == "n_stories"
    resp = await api.post("/v1/jobs", json={"n_stories": 3})
    assert resp.status_code == 422 and resp.json()["field"] == "budget_usd"
    resp = await api.post("/v1/jobs", json={"n_stories": 3, "budget_usd": 1, "model": "nope-9"})
    assert resp.status_code == 422 and resp.json()["field"] == "model"
    resp = await api.post(
        "/v1/jobs", json={"n_stories": 3, "budget_usd": 1, "feature_probs": {"Flying": 0.5}}
    )
    assert resp.status_code == 422 and resp.json()["field"] == "feature_probs"
    both = {"n_stories": 3, "budget_usd": 1, "model": "a", "models": {"b": 1.0}}
    resp = await api.post("/v1/jobs", json=both)
    assert resp.status_code == 422 and resp.json()["field"] == "models"
    resp = await api.get("/v1/jobs/not-a-uuid")
    assert resp.status_code == 422 and resp.json()["field"] == "job_id"


async def test_unknown_ids_are_404(api: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    assert (await api.get(f"/v1/jobs/{missing}")).status_code == 404
    assert (await api.post(f"/v1/jobs/{missing}/pause")).status_code == 404
    assert (await api.get(f"/v1/jobs/{missing}/stories")).status_code == 404
    assert (await api.get("/v1/stories/123456")).status_code == 404


async def test_pause_resume_cancel_and_impossible_transitions(api: httpx.AsyncClient) -> None:
    job = await _submit(api)
    jid = job["id"]
    assert (await api.post(f"/v1/jobs/{jid}/pause")).json()["status"] == "paused"
    assert (await api.post(f"/v1/jobs/{jid}/pause")).status_code == 409
    assert (await api.post(f"/v1/jobs/{jid}/resume")).json()["status"] == "queued"
    assert (await api.post(f"/v1/jobs/{jid}/resume")).status_code == 409
    cancelled = (await api.post(f"/v1/jobs/{jid}/cancel")).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    resp = await api.post(f"/v1/jobs/{jid}/resume")
    assert resp.status_code == 409 and "cancelled" in resp.json()["error"]


async def test_story_pagination_walks_every_story_once(api, settings, simulator_url) -> None:
    from service.work.wiring import run_worker, worker_config

    job = await _submit(api, n_stories=23, budget_usd=5.0)
    s = settings.model_copy(update={"simulator_base_url": simulator_url})
    await run_worker(
        s,
        config=worker_config(s, idle_exit=True, concurrency=8, poll_s=0.05),
        install_signals=False,
    )
    seen, cursor = [], None
    while True:
        params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        page = (await api.get(f"/v1/jobs/{job['id']}/stories", params=params)).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    done = (await api.get(f"/v1/jobs/{job['id']}")).json()
    assert done["status"] == "completed"
    assert len(seen) == len(set(seen)) == done["completed"] + done["rejected"]
    one = (await api.get(f"/v1/stories/{seen[0]}")).json()
    assert one["job_id"] == job["id"] and one["text"]
    assert (await api.post(f"/v1/jobs/{job['id']}/resume")).status_code == 409


async def test_writes_are_committed_before_the_answer_is_sent(settings, sessionmaker) -> None:
    """A client that got 201 (or 200 for pause) must find the change from any connection."""
    import json

    from sqlalchemy import text

    app = create_app(settings)
    seen: list[tuple[str, object]] = []

    async def probe(scope, receive, send):  # what another connection sees at the first byte
        async def send_probed(message):
            if message["type"] == "http.response.body" and scope["method"] == "POST":
                body = json.loads(message["body"])
                async with sessionmaker() as s:
                    status = (
                        await s.execute(
                            text("SELECT status FROM jobs WHERE id = :id"), {"id": body["id"]}
                        )
                    ).scalar()
                seen.append((scope["path"], status))
            await send(message)

        await app(scope, receive, send_probed)

    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=probe),
            base_url="http://test",
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        ) as client:
            job = await _submit(client, n_stories=50)
            assert (await client.post(f"/v1/jobs/{job['id']}/pause")).status_code == 200
    assert seen == [("/v1/jobs", "queued"), (f"/v1/jobs/{job['id']}/pause", "paused")]
