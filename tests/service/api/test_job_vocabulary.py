"""POST /v1/jobs with the job's own vocabulary: stored by hash, shown, and every bad one a
422 naming the field."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service.api.schemas import MAX_VOCABULARY_WORDS
from vocab import default_vocabulary, vocabulary_from_words

JSON = {"content-type": "application/json"}
WORDS = {"noun": ["rocket", "moon", "café"], "verb": ["fly", "land"], "adjective": ["shiny"]}


def _body(vocabulary: Any, **extra: Any) -> dict[str, Any]:
    return {
        "n_stories": 4,
        "model": "simulator-story-1",
        "budget_usd": 1.0,
        "vocabulary": vocabulary,
        **extra,
    }


async def test_a_job_keeps_its_vocabulary_by_hash(api: httpx.AsyncClient, sessionmaker) -> None:
    expected = vocabulary_from_words(WORDS, name="space")
    resp = await api.post("/v1/jobs", json=_body({"name": "space", "words": WORDS}))
    assert resp.status_code == 201, resp.text
    job = resp.json()
    shown = {"name": "space", "sha256": expected.sha256, "noun": 3, "verb": 2, "adjective": 1}
    assert job["vocabulary"] == {**shown, "custom": True}
    assert (await api.get(f"/v1/jobs/{job['id']}")).json()["vocabulary"] == job["vocabulary"]
    # The same words again (decomposed accent, another order and name): stored once.
    again = {**WORDS, "noun": ["cafe\u0301", "moon", "rocket"]}
    other = (await api.post("/v1/jobs", json=_body({"name": "mine", "words": again}))).json()
    assert other["vocabulary"]["sha256"] == expected.sha256
    assert other["vocabulary"]["name"] == "mine"
    async with sessionmaker() as s:
        rows = (await s.execute(text("SELECT sha256, words FROM vocabularies"))).all()
    assert [r.sha256 for r in rows] == [expected.sha256]
    assert rows[0].words["noun"] == ["rocket", "moon", "café"]
    plain = (await api.post("/v1/jobs", json=_body(None))).json()
    default = default_vocabulary()
    assert plain["vocabulary"] == {**default.identity(), "custom": False}
    listed = {j["id"]: j["vocabulary"]["name"] for j in (await api.get("/v1/jobs")).json()["items"]}
    assert listed == {job["id"]: "space", other["id"]: "mine", plain["id"]: "default"}


@pytest.mark.parametrize(
    ("vocabulary", "field", "message"),
    [
        ({"words": {**WORDS, "noun": []}}, "vocabulary.words.noun", "at least 1 item"),
        ({"words": {"noun": ["moon"], "verb": ["fly"]}}, "vocabulary.words.adjective", "required"),
        ({"words": {**WORDS, "noun": "moon"}}, "vocabulary.words.noun", "valid list"),
        ({"words": {**WORDS, "verb": ["fly", 3]}}, "vocabulary.words.verb.1", "valid string"),
        (
            {"words": {**WORDS, "noun": ["moon", "rocket", "ice cream", "sun"]}},
            "vocabulary.words.noun.2",
            "'ice cream' is not a single word",
        ),
        ({"words": {**WORDS, "adjective": ["b1g"]}}, "vocabulary.words.adjective.0", "'b1g'"),
        ({"words": {**WORDS, "adjective": ["big!"]}}, "vocabulary.words.adjective.0", "'big!'"),
        ({"words": {**WORDS, "adjective": [""]}}, "vocabulary.words.adjective.0", "at least 1"),
        (
            {"words": {**WORDS, "verb": ["fly", "land", "fly"]}},
            "vocabulary.words.verb",
            "'fly' is listed twice (items 0 and 2)",
        ),
        ({"words": {**WORDS, "nouns": ["sun"]}}, "vocabulary.words.nouns", "Extra inputs"),
        ({"words": WORDS, "features": ["Dialogue"]}, "vocabulary.features", "Extra inputs"),
        ({"name": "", "words": WORDS}, "vocabulary.name", "at least 1 character"),
        ({"name": "a\nb", "words": WORDS}, "vocabulary.name", "pattern"),
        ({}, "vocabulary.words", "required"),
        (["moon"], "vocabulary", "valid dictionary"),
        (
            {"words": {**WORDS, "noun": ["mo\ud800on"]}},
            "vocabulary",
            "lone surrogate at vocabulary.words.noun.0",
        ),
    ],
)
async def test_bad_vocabularies_name_the_field(
    api: httpx.AsyncClient, vocabulary: Any, field: str, message: str
) -> None:
    # As JSON text: a lone surrogate is valid JSON (an escape) but not UTF-8.
    content = json.dumps(_body(vocabulary))
    resp = await api.post("/v1/jobs", content=content, headers=JSON)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["field"] == field, body
    assert message in body["detail"][0]["message"], body


async def test_too_many_words_is_a_422_naming_the_role(api: httpx.AsyncClient) -> None:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [a + b + c for a in letters for b in letters for c in letters]
    many = words[: MAX_VOCABULARY_WORDS + 1]
    resp = await api.post("/v1/jobs", json=_body({"words": {**WORDS, "noun": many}}))
    assert resp.status_code == 422
    assert resp.json()["field"] == "vocabulary.words.noun"
    assert f"at most {MAX_VOCABULARY_WORDS} items" in resp.json()["detail"][0]["message"]
    # Exactly the limit is a job.
    at_limit = {"words": {**WORDS, "noun": many[:MAX_VOCABULARY_WORDS]}}
    resp = await api.post("/v1/jobs", json=_body(at_limit))
    assert resp.status_code == 201 and resp.json()["vocabulary"]["noun"] == MAX_VOCABULARY_WORDS


async def test_the_published_schema_states_the_word_rule(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()["components"]["schemas"]
    noun = schema["VocabularyWordsIn"]["properties"]["noun"]
    assert noun["minItems"] == 1 and noun["maxItems"] == MAX_VOCABULARY_WORDS
    assert noun["uniqueItems"] is True
    assert noun["items"]["pattern"] == r"^\p{L}[\p{L}\p{M}]*(?:['-]\p{L}[\p{L}\p{M}]*)*$"


async def test_claims_draw_from_the_stored_words_online_and_in_batches(
    api: httpx.AsyncClient, sessionmaker
) -> None:
    from service import store
    from service.store import vocabularies
    from service.store.batches import BATCH_OWNER, batch_tasks
    from vocab import RecipeSampler

    expected = vocabulary_from_words(WORDS, name="space")
    body = _body({"name": "space", "words": WORDS}, n_stories=6, mode="batch", seed=4)
    job = (await api.post("/v1/jobs", json=body)).json()
    vocabularies._built.clear()  # as a worker process that never saw the submit
    async with sessionmaker() as s, s.begin():
        claimed = await store.claim_tasks(
            session=s, worker_id=BATCH_OWNER, limit=10, lease_s=600, mode="batch"
        )
    sampler = RecipeSampler(expected)
    assert [t.index for t in claimed] == list(range(6))
    for task in claimed:
        assert str(task.job_id) == job["id"] and task.vocabulary.sha256 == expected.sha256
        assert task.recipe == sampler.recipe(4, task.index).to_dict()
    vocabularies._built.clear()
    async with sessionmaker() as s:
        back = await batch_tasks(session=s, task_ids=[t.id for t in claimed])
    assert [t.vocabulary.sha256 for t in back] == [expected.sha256] * 6
    assert [t.recipe for t in back] == [t.recipe for t in claimed]
