"""/metrics in Prometheus text format, and JSON log lines."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.logformat import configure_logging
from tests.service.conftest import TEST_TOKEN
from tests.service.dashboard.test_dashboard import AUTH, MODEL, client, seed_jobs  # noqa: F401


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_need_the_token(client) -> None:  # noqa: F811
    assert (await client.get("/metrics")).status_code == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and "tinystories" not in wrong.text
    empty = await client.get("/metrics", headers=AUTH)
    assert empty.status_code == 200
    assert empty.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(empty.text)
    assert samples[("tinystories_queue_depth", (("state", "pending"),))] == 0
    assert samples[("tinystories_simulator", ())] == 1


async def test_metrics_match_the_database(client, settings, simulator_url) -> None:  # noqa: F811
    from service.db import make_engine, make_sessionmaker
    from service.store import rollup_totals

    done, live = await seed_jobs(client, settings, simulator_url)
    engine = make_engine(settings.database_url, pool_size=1)
    async with make_sessionmaker(engine)() as session:
        totals = await rollup_totals(session=session)
    await engine.dispose()

    resp = await client.get("/metrics", headers=AUTH)
    assert resp.status_code == 200
    assert TEST_TOKEN not in resp.text
    s = _samples(resp.text)
    model = (("model", MODEL),)
    assert s[("tinystories_requests_total", model)] == totals["requests"] > 0
    assert s[("tinystories_cost_usd_total", model)] == pytest.approx(float(totals["cost_usd"]))
    prompt = s[("tinystories_tokens_total", (("kind", "prompt"), ("model", MODEL)))]
    assert prompt == done["prompt_tokens"] + live["prompt_tokens"] > 0
    # The histogram counts every request once; its +Inf bucket equals its count.
    assert s[("tinystories_request_latency_seconds_count", model)] == totals["requests"]
    inf = s[("tinystories_request_latency_seconds_bucket", (("le", "+Inf"), ("model", MODEL)))]
    assert inf == totals["requests"]
    le_1s = s[("tinystories_request_latency_seconds_bucket", (("le", "1.0"), ("model", MODEL)))]
    assert 0 <= le_1s <= inf
    live_done = live["completed"] + live["rejected"] + live["failed"]
    assert s[("tinystories_queue_depth", (("state", "pending"),))] == 400 - live_done
    accepted = s[("tinystories_stories", (("status", "accepted"),))]
    assert accepted == done["completed"] + live["completed"] == totals["stories_accepted"]
    assert s[("tinystories_jobs", (("status", "completed"),))] == 1
    assert s[("tinystories_jobs", (("status", "running"),))] == 1
    errors = sum(v for (name, _), v in s.items() if name == "tinystories_request_errors_total")
    assert errors == totals["errors"]


async def test_diversity_gauges_are_rebuilt_after_their_max_age(client, settings) -> None:  # noqa: F811
    from service.db import make_engine, make_sessionmaker
    from service.store.diversity import record_sketch
    from service.store.diversity_sketch import Sketch
    from service.store.models_diversity import ALL_STORIES

    def stories(text: str) -> float:
        return _samples(text)[("tinystories_diversity_stories", ())]

    assert stories((await client.get("/metrics", headers=AUTH)).text) == 0
    engine = make_engine(settings.database_url, pool_size=1)
    async with make_sessionmaker(engine)() as session:
        await record_sketch(session=session, scope=ALL_STORIES, sketch=Sketch(stories=7))
        await session.commit()
    await engine.dispose()
    # Within the max age the scrape reuses the report (the term tables are not read again)...
    assert stories((await client.get("/metrics", headers=AUTH)).text) == 0
    # ...and once it is older, the next scrape shows the new sums.
    client._transport.app.state.metrics_diversity.max_age_s = 0.0
    assert stories((await client.get("/metrics", headers=AUTH)).text) == 7


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("json", "DEBUG")
        log = logging.getLogger("service.test")
        log.info("job finished job=%s", "abc", extra={"job_id": "abc", "stories": 3})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
        lines = capsys.readouterr().err.strip().splitlines()
        first, second = (json.loads(line) for line in lines)
        assert first["message"] == "job finished job=abc" and first["level"] == "info"
        assert first["logger"] == "service.test" and first["job_id"] == "abc"
        assert first["stories"] == 3 and first["ts"].endswith("+00:00")
        assert second["level"] == "error" and "RuntimeError: boom" in second["exc_info"]
        configure_logging("text", logging.INFO)
        logging.getLogger("service.test").info("plain")
        assert capsys.readouterr().err.strip().endswith("INFO service.test plain")
        with pytest.raises(ValueError, match="log format must be one of text, json"):
            configure_logging("xml", logging.INFO)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
