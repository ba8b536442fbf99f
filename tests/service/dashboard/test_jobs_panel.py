"""The dashboard's jobs table names a job's own vocabulary (escaped), in the page and its data."""

from __future__ import annotations

from typing import Any

from tests.service.dashboard.test_dashboard import AUTH, client  # noqa: F401

WORDS = {"noun": ["rocket", "moon", "café"], "verb": ["fly", "land"], "adjective": ["shiny"]}


async def test_a_job_with_its_own_words_shows_them(client: Any) -> None:  # noqa: F811
    body = {"n_stories": 3, "model": "simulator-story-1", "budget_usd": 1.0}
    name = "<b>space</b>"
    custom = await client.post(
        "/v1/jobs", json={**body, "vocabulary": {"name": name, "words": WORDS}}, headers=AUTH
    )
    plain = await client.post("/v1/jobs", json=body, headers=AUTH)
    assert custom.status_code == plain.status_code == 201, custom.text
    jobs = (await client.get("/admin/data/jobs", headers=AUTH)).json()["jobs"]
    label = {j["id"]: j["vocabulary_label"] for j in jobs}
    assert label[custom.json()["id"]] == f"{name}: 3 nouns, 2 verbs, 1 adjective"
    assert label[plain.json()["id"]] is None
    page = (await client.get("/admin", headers=AUTH)).text
    assert "&lt;b&gt;space&lt;/b&gt;: 3 nouns, 2 verbs, 1 adjective" in page
    assert name not in page
    assert custom.json()["vocabulary"]["sha256"] in page  # in the label's title
