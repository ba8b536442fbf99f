"""A server we did not write: `transformers serve` with a GPT-Neo our trainer makes, as the
story provider of a job (API + worker) and as the judge of `tinystories grade`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from generator.checks import CHECK_NAMES
from service.work.wiring import run_worker, worker_config
from tests.local_server import LocalServer, serve_model, train_chat_model
from tinystories.cli import app

FREE = ["--price-input", "0", "--price-output", "0"]


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    model_dir = train_chat_model(tmp_path_factory.mktemp("local-model"))
    with serve_model(model_dir) as server:
        yield server


@pytest.fixture
def settings(settings, local_server: LocalServer):
    """The service's settings with the local server as its provider (no API key)."""
    return settings.model_copy(update={"openai_base_url": local_server.base_url})


def prompt_tokens(server: LocalServer, prompt: str) -> int:
    """What the server's chat template makes of one user message, in tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(server.model_dir)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    return len(ids)


async def run_job(api, settings, body: dict) -> dict:
    resp = await api.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = resp.json()
    await run_worker(
        settings,
        config=worker_config(settings, idle_exit=True, concurrency=4, poll_s=0.05),
        install_signals=False,
    )
    return (await api.get(f"/v1/jobs/{job['id']}")).json()


async def job_requests(sessionmaker, job_id: str) -> list[dict]:
    async with sessionmaker() as session:
        rows = await session.execute(
            text(
                "SELECT task_id, kind, model, provider, outcome, error_class, status, "
                "prompt_tokens, completion_tokens, cost_usd, latency_s, finish_reason "
                "FROM requests WHERE job_id = :id ORDER BY id"
            ),
            {"id": job_id},
        )
        return [dict(r._mapping) for r in rows]


async def job_stories(sessionmaker, job_id: str) -> list[dict]:
    async with sessionmaker() as session:
        rows = await session.execute(
            text(
                "SELECT task_id, prompt_tokens, completion_tokens FROM stories WHERE job_id = :id"
            ),
            {"id": job_id},
        )
        return [dict(r._mapping) for r in rows]


async def test_a_job_runs_on_transformers_serve_at_price_zero(
    api, settings, local_server: LocalServer, sessionmaker
) -> None:
    job = await run_job(
        api,
        settings,
        {
            "n_stories": 3,
            "model": local_server.model,
            "seed": 2,
            "budget_usd": 1.0,
            "max_tokens": 48,
            "price": {"input": 0, "output": 0},
        },
    )
    assert job["simulator"] is False and job["provider"] == "127.0.0.1"
    assert job["status"] == "completed", job
    # 48 tokens cannot make the 50 words a story needs: all three are stored and rejected.
    assert (job["completed"], job["rejected"], job["failed"]) == (0, 3, 0)
    assert job["cost_usd"] == 0 and job["n_requests"] == 3

    calls = await job_requests(sessionmaker, job["id"])
    assert len(calls) == 3 and len({c["task_id"] for c in calls}) == 3
    page = (await api.get(f"/v1/jobs/{job['id']}/stories", params={"limit": 10})).json()
    stories = {s["task_id"]: s for s in page["items"]}
    assert len(page["items"]) == 3 == len(stories)  # one story per task, stored once
    for call in calls:
        story = stories[call["task_id"]]
        assert call["kind"] == "story" and call["outcome"] == "ok" and call["status"] == 200
        assert call["model"] == local_server.model and call["provider"] == "127.0.0.1"
        # The server's own token counts: its chat template over our prompt, and at most the
        # max_tokens we asked for (it stops at 48 or at its end-of-text token).
        assert call["prompt_tokens"] == prompt_tokens(local_server, story["prompt"])
        assert 1 <= call["completion_tokens"] <= 48
        assert call["finish_reason"] == ("length" if call["completion_tokens"] == 48 else "stop")
        assert call["cost_usd"] == 0 and call["latency_s"] > 0
        assert (story["prompt_tokens"], story["completion_tokens"]) == (
            call["prompt_tokens"],
            call["completion_tokens"],
        )
        assert story["provider"] == "127.0.0.1" and story["cost_usd"] == 0
        # The job explains each rejection: too short (or empty), and truncated where the
        # server says it stopped at max_tokens.
        reasons = set(story["rejection_reasons"])
        assert not story["accepted"] and reasons & {"too_short", "empty"}
        assert ("truncated" in reasons) == (call["finish_reason"] == "length")
        assert reasons <= set(CHECK_NAMES)
    by_reason = Counter(r for s in stories.values() for r in s["rejection_reasons"])
    assert job["rejections_by_reason"] == dict(by_reason)
    assert len(await job_stories(sessionmaker, job["id"])) == 3
    assert job["prompt_tokens"] == sum(c["prompt_tokens"] for c in calls)
    assert job["completion_tokens"] == sum(c["completion_tokens"] for c in calls)


async def test_a_model_the_server_does_not_serve_is_one_clear_line(
    api, settings, local_server: LocalServer, sessionmaker
) -> None:
    # transformers serve pinned to one model answers 400 with FastAPI's {"detail": ...}.
    job = await run_job(
        api,
        settings,
        {
            "n_stories": 2,
            "model": "tiny-neo-2",
            "seed": 2,
            "budget_usd": 1.0,
            "max_tokens": 48,
            "price": {"input": 0, "output": 0},
        },
    )
    assert job["status"] == "failed" and job["failed"] == 2 and job["completed"] == 0
    assert job["last_error"].startswith("bad_request")
    assert "Server is pinned to 'tiny-neo'; requested 'tiny-neo-2'" in job["last_error"]
    assert "\n" not in job["last_error"]
    # No retry can fix a 400: one call per task, each recorded, nothing stored.
    calls = await job_requests(sessionmaker, job["id"])
    assert sorted(c["task_id"] for c in calls) == sorted({c["task_id"] for c in calls})
    assert len(calls) == 2 == job["n_requests"]
    assert all(
        (c["outcome"], c["status"], c["error_class"]) == ("error", 400, "bad_request")
        for c in calls
    )
    assert await job_stories(sessionmaker, job["id"]) == []


def test_generate_against_a_model_the_server_does_not_serve_is_one_line(
    local_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", local_server.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["generate", "--n", "2", "--out", str(out), "--model", "tiny-neo-2", *FREE],
    )
    assert res.exit_code == 1, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.stderr
    assert "2 failed (bad_request 2" in errors[0]
    assert "Server is pinned to 'tiny-neo'; requested 'tiny-neo-2'" in errors[0]
    calls = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert [(c["status"], c["attempt"], c["cost_usd"]) for c in calls] == [(400, 1, 0.0)] * 2
    stories = [json.loads(line) for line in (out / "stories.jsonl").read_text().splitlines()]
    assert sorted(s["index"] for s in stories) == [0, 1]
    assert all(s["text"] is None and "pinned" in s["error"] for s in stories)


def test_grade_with_transformers_serve_as_judge(
    local_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grader.answers import PARSE_FAILURE

    monkeypatch.setenv("TINYSTORIES_LOCAL_MODELS", local_server.model)
    out = tmp_path / "report"
    judge = ["--judge", local_server.model, "--judge-base-url", local_server.base_url]
    judge += ["--judge-api-key", "none", "--judge-max-tokens", "32"]
    small = ["--prompts", "2", "--k", "1", "--max-new-tokens", "24", "--noise-sample", "0"]
    small += ["--suites", "none", "--instruct", "off", "--no-checkpoints"]
    model = ["--model", str(local_server.model_dir), "--out", str(out)]
    res = CliRunner().invoke(app, ["grade", *model, *judge, *small])
    # A judge that never answers in the rubric's format is a finding, not a crash: exit 0,
    # each unreadable answer counted, listed and kept.
    assert res.exit_code == 0, res.output
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("graded 1 model(s): tiny-neo:") and "(n=2, 2 unreadable)" in last
    assert "no price known" not in res.stderr  # TINYSTORIES_LOCAL_MODELS priced it at 0
    report = json.loads((out / "report.json").read_text())
    gpt_eval = report["models"][0]["gpt_eval"]
    assert (gpt_eval["judged"], gpt_eval["parse_failures"], gpt_eval["errors"]) == (0, 2, 0)
    assert len(gpt_eval["failures"]) == 2
    cost = report["cost"]
    # The preflight, then per completion the paper's two turns and one corrective turn.
    assert cost["requests"] == 1 + 2 * 3 and cost["failed_requests"] == 0
    assert cost["usd"] == 0 and cost["unpriced_models"] == [] and cost["prompt_tokens"] > 0
    answers = [json.loads(r) for r in (out / "judge_answers.jsonl").read_text().splitlines()]
    completions = [
        json.loads(r)["completion"]
        for r in (out / "completions" / "tiny-neo.jsonl").read_text().splitlines()
    ]
    assert sorted(a["completion"] for a in answers) == sorted(completions)
    for answer in answers:
        assert answer["judge_model"] == "tiny-neo" and answer["method"] == "parse_failure"
        assert answer["parsed"] is None and answer["error"] == PARSE_FAILURE
        assert answer["attempts"] == 2 and not answer["cached"]
        assert isinstance(answer["raw"], str) and isinstance(answer["first_raw"], str)
    assert "unreadable" in (out / "report.md").read_text()
