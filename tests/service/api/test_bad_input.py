"""Bad input is a 4xx naming the field, never a 500 or a silent default: export options,
times without an offset, unstorable text, an export whose files are gone, tiny budgets,
malformed JSON and unknown ids."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import text

from service.api.guard import unstorable_text
from service.store import exports as exports_store

DATA = Path(__file__).parents[1] / "data"
JSON = {"content-type": "application/json"}


async def _exports_made(sessionmaker: Any) -> int:
    async with sessionmaker() as s:
        return (await s.execute(text("SELECT count(*) FROM exports"))).scalar_one()


async def _finished(api: httpx.AsyncClient, export_id: str) -> dict[str, Any]:
    for _ in range(600):
        body = (await api.get(f"/v1/exports/{export_id}")).json()
        if body["status"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError("export did not finish")


def _stories(url: str, times: list[str]) -> None:
    """Accepted real stories, one per created_at (timestamptz literals)."""
    src = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    texts = [s.strip() for s in src.split("<|endoftext|>") if s.strip()]
    with psycopg.connect(exports_store.libpq_url(url)) as conn:
        for i, created in enumerate(times):
            conn.execute(
                "INSERT INTO stories (text, accepted, text_hash, model, provider, created_at) "
                "VALUES (%s, true, %s, 'simulator-story-1', 'simulator', %s::timestamptz)",
                (texts[i], f"bad-input-{i}", created),
            )


async def test_unknown_export_option_is_a_422_naming_it(api, sessionmaker) -> None:
    r = await api.post("/v1/exports", json={"include_rejectd": True})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "include_rejectd"
    assert await _exports_made(sessionmaker) == 0


async def test_export_times_without_an_offset_are_utc(api) -> None:
    r = await api.post(
        "/v1/exports", json={"since": "2020-01-01T00:00:00", "until": "2030-01-01T00:00:00Z"}
    )
    assert r.status_code == 202, r.text
    body = await _finished(api, r.json()["id"])  # nothing stored: it fails, it does not hang
    assert body["options"]["since"] == "2020-01-01T00:00:00Z"
    assert body["options"]["until"] == "2030-01-01T00:00:00Z"
    backwards = {"since": "2030-01-01T00:00:00", "until": "2029-12-31T23:00:00Z"}
    r = await api.post("/v1/exports", json=backwards)
    assert r.status_code == 422 and r.json()["field"] == "until"


def test_stored_naive_export_times_are_read_as_utc_whatever_the_session_zone(
    database_url: str,
) -> None:
    _stories(database_url, ["2021-06-01 12:00:00+00", "2021-06-01 18:00:00+00"])
    with psycopg.connect(exports_store.libpq_url(database_url)) as conn:
        conn.execute("SET TIME ZONE 'Asia/Tokyo'")  # 15:00 there is 06:00 UTC
        options = {"since": "2021-06-01T15:00:00", "include_duplicates": True}
        assert exports_store.count_rows(conn, options) == 1


async def test_lone_surrogate_in_export_options_is_a_422_naming_the_field(
    api, sessionmaker
) -> None:
    r = await api.post("/v1/exports", content=b'{"models": ["\\ud800"]}', headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "models" and "models.0" in r.json()["detail"][0]["message"]
    assert await _exports_made(sessionmaker) == 0


def test_the_guard_recognises_unstorable_text_however_it_is_wrapped() -> None:
    from pydantic import BaseModel

    class Body(BaseModel):
        name: str

    try:
        Body(name="\ud800").model_dump_json()
    except ValueError as exc:  # pydantic's serializer hides the codec's error in its text
        assert unstorable_text(exc) == "text must be valid unicode (no lone surrogates)"
    nul = psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    assert unstorable_text(nul) == "text must not contain NUL characters"
    assert unstorable_text(RuntimeError("disk full")) is None


async def test_download_of_an_export_whose_files_are_gone_is_410(api, database_url: str) -> None:
    _stories(database_url, [f"2021-06-01 12:{m:02d}:00+00" for m in range(20)])
    r = await api.post(
        "/v1/exports", json={"validation_fraction": 0.5, "seed": 1, "decontaminate": False}
    )
    assert r.status_code == 202, r.text
    export_id = r.json()["id"]
    assert (await _finished(api, export_id))["status"] == "completed"
    assert (await api.get(f"/v1/exports/{export_id}/download")).status_code == 200
    path = Path(_export_path(database_url, export_id))
    shutil.rmtree(path)
    gone = await api.get(f"/v1/exports/{export_id}/download")
    assert gone.status_code == 410, gone.text
    body = gone.json()
    assert body["field"] == "export_id" and "files are missing" in body["error"]
    await asyncio.to_thread(path.mkdir)  # an empty directory in its place: still gone
    assert (await api.get(f"/v1/exports/{export_id}/download")).status_code == 410
    assert (await api.get(f"/v1/exports/{export_id}")).json()["status"] == "completed"


def _export_path(url: str, export_id: str) -> str:
    with psycopg.connect(exports_store.libpq_url(url)) as conn:
        return conn.execute("SELECT path FROM exports WHERE id = %s", (export_id,)).fetchone()[0]


async def test_budgets_that_would_round_to_zero_are_refused(api: httpx.AsyncClient) -> None:
    body = {"n_stories": 2, "model": "simulator-story-1", "budget_usd": 1e-10}
    r = await api.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "budget_usd" and "0.000000001" in r.json()["detail"][0]["message"]
    assert (await api.get("/v1/jobs")).json()["items"] == []
    job = await api.post("/v1/jobs", json={**body, "budget_usd": 1e-9})
    assert job.status_code == 201 and job.json()["budget_usd"] == 1e-9
    job_id = job.json()["id"]
    r = await api.patch(f"/v1/jobs/{job_id}", json={"budget_usd": 4e-10})
    assert r.status_code == 422 and r.json()["field"] == "budget_usd"
    assert (await api.get(f"/v1/jobs/{job_id}")).json()["budget_usd"] == 1e-9


async def test_malformed_json_names_the_body(api: httpx.AsyncClient) -> None:
    for path in ("/v1/jobs", "/v1/exports"):
        r = await api.post(path, content=b"{bad", headers=JSON)
        assert r.status_code == 422 and r.json()["field"] == "body", r.text
    r = await api.post("/v1/jobs", headers=JSON)  # no body at all
    assert r.status_code == 422 and r.json()["field"] == "body"
    r = await api.post("/v1/jobs", json={"n_stories": 1})  # a field inside it, as before
    assert r.json()["field"] == "budget_usd"


async def test_not_found_names_the_path_parameter(api: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    for path, field in (
        (f"/v1/jobs/{missing}", "job_id"),
        (f"/v1/jobs/{missing}/stories", "job_id"),
        (f"/v1/jobs/{missing}/diversity", "job_id"),
        (f"/v1/exports/{missing}", "export_id"),
        (f"/v1/exports/{missing}/download", "export_id"),
        ("/v1/stories/123456", "story_id"),
    ):
        r = await api.get(path)
        assert r.status_code == 404, path
        body = r.json()
        assert body["field"] == field and "not found" in body["error"], (path, body)
        assert body["detail"] == {"field": field, "message": body["error"]}
    r = await api.post(f"/v1/jobs/{missing}/pause")
    assert r.status_code == 404 and r.json()["field"] == "job_id"
    r = await api.patch(f"/v1/jobs/{missing}", json={"budget_usd": 1})
    assert r.status_code == 404 and r.json()["field"] == "job_id"
