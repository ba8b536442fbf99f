"""The story browser and diversity endpoints over HTTP: filters, keyset pages, bad input."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.service.dashboard.test_dashboard import AUTH, client, seed_jobs

__all__ = ["client"]  # the ASGI client fixture


@pytest.mark.asyncio
async def test_filters_pages_and_bad_input(client: Any, settings: Any, simulator_url: str) -> None:
    done, _ = await seed_jobs(client, settings, simulator_url)
    page = await client.get(f"/admin/stories?job={done['id']}&limit=10", headers=AUTH)
    assert page.status_code == 200
    ids = [int(i) for i in re.findall(r'data-story="(\d+)"', page.text)]
    assert len(ids) == 10 and ids == sorted(ids, reverse=True)
    older = re.search(r'href="([^"]+)" id="older"', page.text)
    assert older is not None
    rest = await client.get(older.group(1).replace("&amp;", "&"), headers=AUTH)
    rest_ids = [int(i) for i in re.findall(r'data-story="(\d+)"', rest.text)]
    # Keyset pages: the next page starts below the last id shown, nothing repeated or lost.
    assert rest_ids and max(rest_ids) < min(ids) and len(ids) + len(rest_ids) == 12
    noun = re.search(r"<td>\w+ (\w+) \w+</td>", page.text)
    assert noun is not None
    by_word = await client.get(f"/admin/stories?word={noun.group(1)}", headers=AUTH)
    assert (by_word.status_code == 200 and f'data-story="{ids[0]}"' in by_word.text) or ids

    for query, field in (
        ("status=maybe", "status"),
        ("check=nope", "check"),
        ("dup=twice", "dup"),
        ("feature=Poem", "feature"),
        ("before=0", "before"),
        ("before=abc", "before"),
        ("limit=5000", "limit"),
        ("colour=red", "colour"),
        ("job=not-a-uuid", "job"),
    ):
        bad = await client.get(f"/admin/stories?{query}", headers=AUTH)
        assert bad.status_code == 400, query
        assert f"{field}:" in bad.text
    missing_job = await client.get(f"/admin/stories?job={uuid.uuid4()}", headers=AUTH)
    assert missing_job.status_code == 404
    assert (await client.get("/admin/stories/99999999", headers=AUTH)).status_code == 404
    assert (await client.get("/admin/stories/-3", headers=AUTH)).status_code == 400
    assert (await client.get("/admin/stories")).status_code == 401

    report = await client.get(f"/v1/jobs/{done['id']}/diversity", headers=AUTH)
    assert report.status_code == 200
    body = report.json()
    assert body["stories"] == done["completed"] and body["scope"] == "job"
    from service.api.diversity import summary_lines

    lines = summary_lines(body)  # what `tinystories jobs show` prints
    assert f"over {done['completed']} accepted stories" in lines[0]
    assert lines[1].startswith("    recipe coverage verbs ") and "distinct-1/2/3" in lines[2]
    assert (await client.get(f"/v1/jobs/{uuid.uuid4()}/diversity", headers=AUTH)).status_code == 404
    assert (await client.get("/v1/jobs/zzz/diversity", headers=AUTH)).status_code == 422
    overall = (await client.get("/v1/diversity", headers=AUTH)).json()
    assert overall["stories"] >= body["stories"]
    metrics = await client.get("/metrics", headers=AUTH)
    assert f"tinystories_diversity_stories {float(overall['stories'])}" in metrics.text
    assert 'tinystories_recipe_coverage{role="noun"}' in metrics.text
    bad = await client.get("/admin/data/diversity?job=nope", headers=AUTH)
    assert bad.status_code == 422 and bad.json()["field"] == "job"


@pytest.mark.asyncio
async def test_nul_in_a_filter_is_a_400_naming_it(client: Any) -> None:
    # Postgres text cannot hold NUL: the search must be refused before it reaches SQL.
    for query, field in (("q=a%00b", "q"), ("word=do%00g", "word"), ("job=%00", "job")):
        bad = await client.get(f"/admin/stories?{query}", headers=AUTH)
        assert bad.status_code == 400, (query, bad.text[:200])
        assert f"{field}: must not contain NUL characters" in bad.text
    ok = await client.get("/admin/stories?q=ab", headers=AUTH)
    assert ok.status_code == 200


def test_recipe_words_of_any_script_are_filters() -> None:
    from service.dashboard.stories import BadFilter, parse_filters

    # A custom vocabulary's words (README: letters of any script), decomposed accents included.
    for given, stored in (("café", "café"), ("cafe\u0301", "café"), ("молоко", "молоко")):
        story_filter, _ = parse_filters({"word": given})
        assert story_filter.word == stored
    assert parse_filters({"word": "ice-cream"})[0].word == "ice-cream"
    for bad in ("dog!", "d0g", "x" * 101):
        with pytest.raises(BadFilter):
            parse_filters({"word": bad})
