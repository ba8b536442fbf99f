"""The API holds under abuse: the token is checked before a body is read, bodies have a size
limit, unstorable text is a 422, a database outage is a 503 with Retry-After (and one log
line, not a traceback per request), a failing export ends `failed` with its reason."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from service.api import create_app
from tests.service.conftest import TEST_TOKEN

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


async def _asgi(app: Any, method: str, path: str, headers: dict[str, str], chunks: list[bytes]):
    """Call the app directly; returns (status, body, how many body chunks it read)."""
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        if read < len(chunks):
            read += 1
            more = read < len(chunks)
            return {"type": "http.request", "body": chunks[read - 1], "more_body": more}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
        "app": app,
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), read, dict(start["headers"])


@pytest.fixture
async def app(settings):
    app = create_app(settings.model_copy(update={"max_request_bytes": 64 * 1024}))
    async with app.router.lifespan_context(app):
        yield app


async def test_no_token_is_refused_before_the_body_is_read(app) -> None:
    chunks = [b"x" * 1_000_000] * 32  # a 32 MB body, announced
    headers = {"content-type": "application/json", "content-length": str(32_000_000)}
    status, body, read, _ = await _asgi(app, "POST", "/v1/jobs", headers, chunks)
    assert status == 401 and body["field"] == "authorization"
    assert read == 0


async def test_bodies_over_the_limit_are_413_announced_or_streamed(app) -> None:
    big = [b'{"n_stories": 1, "budget_usd": 1, "name": "' + b"a" * 70_000 + b'"}']
    headers = {**AUTH, "content-type": "application/json", "content-length": str(len(big[0]))}
    status, body, read, _ = await _asgi(app, "POST", "/v1/jobs", headers, big)
    assert (status, body["field"], read) == (413, "body", 0)
    # Chunked, no length: refused once the limit is passed, the rest never read.
    chunks = [b"a" * 16_384] * 40
    headers = {**AUTH, "content-type": "application/json"}
    status, body, read, _ = await _asgi(app, "POST", "/v1/jobs", headers, chunks)
    assert (status, body["field"]) == (413, "body") and read == 5


async def test_lone_surrogates_are_a_422_naming_the_field(api: httpx.AsyncClient) -> None:
    raw = b'{"n_stories": 2, "budget_usd": 1, "models": {"simulator-\\ud800": 1}}'
    r = await api.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "models"
    assert (await api.get("/v1/jobs")).json()["items"] == []


async def test_database_outage_is_503_with_retry_after_and_few_log_lines(settings, caplog) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(settings, database_url="postgresql+psycopg://nobody@127.0.0.1:9/none")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=AUTH
        ) as api:
            answers = [await api.get("/v1/jobs") for _ in range(20)]
    assert {r.status_code for r in answers} == {503}
    assert answers[0].headers["retry-after"] == "5"
    assert answers[0].json()["error"].startswith("database unavailable")
    lines = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(lines) == 1 and not any(r.exc_info for r in caplog.records)


async def test_an_export_that_fails_ends_failed_with_its_reason(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/exports", json={"since": "2020-01-01T00:00:00+16:00"})
    if r.status_code == 422:  # refused up front is as good as failing later
        assert r.json()["field"] == "since"
        return
    assert r.status_code == 202
    export_id = r.json()["id"]
    while True:  # ends one way or the other; the test's timeout catches a hang
        body = (await api.get(f"/v1/exports/{export_id}")).json()
        if body["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.1)
    assert body["status"] == "failed" and body["error"]
