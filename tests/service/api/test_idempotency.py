"""A client that retries a POST with the same Idempotency-Key gets what its first request
created, never a second job or export; reusing a key for another body is refused."""

from __future__ import annotations

import asyncio

import httpx

BODY = {"n_stories": 3, "budget_usd": 1.0, "seed": 5}


async def test_a_retried_job_submission_creates_one_job(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "retry-7f0c"}
    first = await api.post("/v1/jobs", json=BODY, headers=key)
    again = await api.post("/v1/jobs", json=BODY, headers=key)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    other = await api.post("/v1/jobs", json=BODY)  # no key: a new job, as before
    assert other.json()["id"] != first.json()["id"]
    assert len((await api.get("/v1/jobs")).json()["items"]) == 2
    reused = await api.post("/v1/jobs", json={**BODY, "seed": 6}, headers=key)
    assert reused.status_code == 409 and reused.json()["field"] == "Idempotency-Key"
    assert len((await api.get("/v1/jobs")).json()["items"]) == 2


async def test_concurrent_retries_agree_on_one_job(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "burst-1"}
    answers = await asyncio.gather(
        *(api.post("/v1/jobs", json=BODY, headers=key) for _ in range(4))
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert len((await api.get("/v1/jobs")).json()["items"]) == 1


async def test_a_retried_export_starts_one_export(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "export-1"}
    first = await api.post("/v1/exports", json={"seed": 1}, headers=key)
    again = await api.post("/v1/exports", json={"seed": 1}, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    bad = await api.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": "bad key"})
    assert bad.status_code == 422 and bad.json()["field"] == "Idempotency-Key"
