"""Batch API jobs: request files within limits, the real openai SDK against the simulator's
Batch API over HTTP, partial failures, malformed and missing lines, expiry, cancel, restart."""

from __future__ import annotations

import json
import math
import time

import httpx
import orjson
import pytest

from generator.batch import BatchClient, BatchStatus
from generator.batch_files import (
    BatchFailure,
    BatchFile,
    BatchRequest,
    BatchSuccess,
    build_batch_files,
    parse_results,
)
from generator.errors import ProviderError
from generator.pricing import PriceTable
from generator.prompts import render_story_prompt
from generator.simulator import SimulatorConfig, run_simulator
from generator.simulator.batch import BATCH_CONFIG_ENV
from vocab import RecipeSampler

MODEL = "simulator-story-1"
STALL_S = 15.0  # a batch whose counts do not move for this long is stuck


def story_requests(n: int, model: str = MODEL, prefix: str = "task") -> list[BatchRequest]:
    sampler = RecipeSampler()
    return [
        BatchRequest(
            custom_id=f"{prefix}-{i}",
            model=model,
            messages=[{"role": "user", "content": render_story_prompt(sampler.recipe(7, i))}],
            max_tokens=600,
        )
        for i in range(n)
    ]


def one_file(requests: list[BatchRequest]):
    files = list(build_batch_files(requests))
    assert len(files) == 1
    return files[0]


async def wait_progressing(client: BatchClient, batch_id: str) -> BatchStatus:
    """Poll until finished; fail only when the batch stops moving."""
    last, moved_at = None, time.monotonic()
    while True:
        status = await client.retrieve(batch_id)
        if status.terminal:
            return status
        seen = (status.status, status.completed, status.failed)
        if seen != last:
            last, moved_at = seen, time.monotonic()
        assert time.monotonic() - moved_at < STALL_S, f"batch stuck at {status}"
        await _sleep(0.05)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def sim_get(base_url: str, path: str) -> dict:
    return httpx.get(base_url.removesuffix("/v1") + path, timeout=10).json()


async def run_batch(url: str, requests: list[BatchRequest], **metadata: str):
    batch_file = one_file(requests)
    async with BatchClient(base_url=url, api_key="k", provider="simulator") as client:
        file_id = await client.upload(batch_file)
        created = await client.create(file_id, metadata=metadata)
        assert created.id and created.input_file_id == file_id
        status = await wait_progressing(client, created.id)
        results = await client.results(status, batch_file.custom_ids)
    return status, results


# ---- building files ----------------------------------------------------------------------


def test_files_are_cut_by_requests_bytes_and_model() -> None:
    requests = story_requests(7) + story_requests(3, model="simulator-story-mini-1", prefix="m")
    files = list(build_batch_files(requests, max_requests=3))
    assert [(f.model, len(f.custom_ids)) for f in files] == [
        (MODEL, 3),
        (MODEL, 3),
        (MODEL, 1),
        ("simulator-story-mini-1", 3),
    ]
    assert [i for f in files for i in f.custom_ids if i.startswith("task")] == [
        f"task-{i}" for i in range(7)
    ]
    line = json.loads(files[0].content.splitlines()[0])
    assert line["custom_id"] == "task-0" and line["url"] == "/v1/chat/completions"
    assert line["method"] == "POST" and line["body"]["max_tokens"] == 600

    sizes = [len(r.line()) + 1 for r in story_requests(10)]
    limit = max(sizes) * 3
    by_bytes = list(build_batch_files(story_requests(10), max_bytes=limit))
    assert all(f.size <= limit for f in by_bytes) and len(by_bytes) >= math.ceil(sum(sizes) / limit)
    assert sum(len(f.custom_ids) for f in by_bytes) == 10


def test_building_refuses_duplicates_and_oversized_requests() -> None:
    twice = story_requests(2)
    twice[1] = BatchRequest("task-0", MODEL, twice[1].messages)
    with pytest.raises(ValueError, match="'task-0' appears twice"):
        list(build_batch_files(twice))
    with pytest.raises(ValueError, match="over the 100-byte limit"):
        list(build_batch_files(story_requests(1), max_bytes=100))
    with pytest.raises(ValueError, match="custom_id must be a non-empty string"):
        BatchRequest("", MODEL, []).line()


# ---- reading results ---------------------------------------------------------------------


def _ok(custom_id: str, text: str, finish: str = "stop") -> bytes:
    body = {
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"message": {"content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 200},
    }
    return orjson.dumps({"custom_id": custom_id, "response": {"status_code": 200, "body": body}})


def test_parsing_tolerates_bad_lines_and_reports_missing_ids() -> None:
    expired = {"code": "batch_expired", "message": "not run in time"}
    rate = {
        "error": {"message": "Incorrect API key: sk-abcdefghijklmnop", "code": "invalid_api_key"}
    }
    output = b"\n".join(
        [
            _ok("a", "Once upon a time."),
            b'{"custom_id": "b", "response": {"status_co',  # cut off
            b"[1, 2]",
            _ok("c", "", finish="content_filter"),
            _ok("zz", "not ours"),
            _ok("a", "a second answer for a"),
            b"",
        ]
    )
    errors = b"\n".join(
        [
            orjson.dumps({"custom_id": "d", "response": None, "error": expired}),
            orjson.dumps({"custom_id": "e", "response": {"status_code": 401, "body": rate}}),
            orjson.dumps({"custom_id": "a", "response": {"status_code": 500, "body": {}}}),
        ]
    )
    results = parse_results(["a", "b", "c", "d", "e", "f"], output, errors)
    assert results.results["a"] == BatchSuccess(
        "a", "Once upon a time.", "stop", "gpt-4o-mini-2024-07-18", 100, 200
    )
    c, d, e = (results.results[k] for k in "cde")
    assert isinstance(c, BatchFailure) and (c.reason, c.retryable) == ("content_filter", False)
    assert isinstance(d, BatchFailure) and (d.reason, d.retryable) == ("expired", True)
    assert isinstance(e, BatchFailure) and (e.reason, e.status, e.retryable) == ("auth", 401, False)
    assert "sk-abcdefghijklmnop" not in e.message and "[redacted]" in e.message
    assert results.missing == ("b", "f")
    assert results.malformed_lines == 2 and results.unexpected_ids == ("zz",)
    assert results.to_resubmit() == ["d", "b", "f"]
    prices = PriceTable.load()
    assert results.cost(prices) == pytest.approx(0.5 * prices.cost("gpt-4o-mini", 100, 200))
    empty = parse_results(["x"], None, None)
    assert empty.missing == ("x",) and empty.results == {}


# ---- against the simulator over HTTP ------------------------------------------------------


async def test_batch_end_to_end_bills_at_the_batch_price(simulator) -> None:
    before = sim_get(simulator, "/v1/simulator/stats")["counts"]
    requests = story_requests(12)
    status, results = await run_batch(simulator, requests, simulator_completion_s="0.3")
    assert status.status == "completed" and (status.total, status.completed) == (12, 12)
    assert results.missing == () and results.malformed_lines == 0
    assert len(results.successes) == 12
    sampler = RecipeSampler()
    for i, success in enumerate(sorted(results.successes, key=lambda s: int(s.custom_id[5:]))):
        assert success.custom_id == f"task-{i}" and success.finish_reason == "stop"
        assert sampler.recipe(7, i).noun in success.text  # the story for that task's recipe
    after = sim_get(simulator, "/v1/simulator/stats")["counts"]
    # Counted at the provider as batch work, not as online requests.
    assert after.get("requests", 0) == before.get("requests", 0)
    assert after["batch_requests"] - before.get("batch_requests", 0) == 12
    prompt = sum(s.prompt_tokens for s in results.successes)
    completion = sum(s.completion_tokens for s in results.successes)
    assert after["batch_prompt_tokens"] - before.get("batch_prompt_tokens", 0) == prompt
    assert after["batch_completion_tokens"] - before.get("batch_completion_tokens", 0) == completion
    prices = PriceTable.load()
    assert results.cost(prices, MODEL) == pytest.approx(prices.cost(MODEL, prompt, completion) / 2)
    assert results.cost(prices) == pytest.approx(results.cost(prices, MODEL))


async def test_partial_failures_go_to_the_error_file(simulator) -> None:
    status, results = await run_batch(
        simulator, story_requests(30), simulator_completion_s="0.2", simulator_failure_rate="0.4"
    )
    failures, successes = results.failures, results.successes
    assert status.status == "completed" and status.error_file_id and status.output_file_id
    assert (status.completed, status.failed) == (len(successes), len(failures))
    assert len(successes) + len(failures) == 30 and 3 <= len(failures) <= 27
    assert {(f.reason, f.status, f.retryable) for f in failures} == {("server_error", 500, True)}
    assert sorted(results.to_resubmit()) == sorted(f.custom_id for f in failures)


async def test_malformed_and_missing_lines_are_reported(simulator) -> None:
    before = sim_get(simulator, "/v1/simulator/batch_stats")["counts"]
    requests = story_requests(40)
    status, results = await run_batch(
        simulator,
        requests,
        simulator_completion_s="0.2",
        simulator_malformed_rate="0.25",
        simulator_drop_rate="0.2",
    )
    after = sim_get(simulator, "/v1/simulator/batch_stats")["counts"]
    broken = after.get("batch_malformed_lines", 0) - before.get("batch_malformed_lines", 0)
    dropped = after.get("batch_dropped_lines", 0) - before.get("batch_dropped_lines", 0)
    assert status.status == "completed" and broken > 0 and dropped > 0
    assert results.malformed_lines == broken
    assert len(results.missing) == broken + dropped
    assert len(results.successes) == 40 - broken - dropped
    assert set(results.results) | set(results.missing) == {r.custom_id for r in requests}


async def test_expired_batch_keeps_completed_work(simulator) -> None:
    status, results = await run_batch(
        simulator, story_requests(20), simulator_completion_s="4", simulator_window_s="1"
    )
    # A quarter of the 4 s the batch needed fits in its 1 s window.
    assert status.status == "expired" and (status.completed, status.failed) == (5, 15)
    assert len(results.successes) == 5 and results.missing == ()
    assert {(f.reason, f.retryable) for f in results.failures} == {("expired", True)}
    assert len(results.to_resubmit()) == 15


async def test_cancel_reports_the_rest_cancelled(simulator) -> None:
    batch_file = one_file(story_requests(10))
    async with BatchClient(base_url=simulator, api_key="k") as client:
        created = await client.create(
            await client.upload(batch_file), metadata={"simulator_completion_s": "600"}
        )
        cancelling = await client.cancel(created.id)
        assert cancelling.status == "cancelling"
        status = await wait_progressing(client, created.id)
        assert status.status == "cancelled"
        results = await client.results(status, batch_file.custom_ids)
        with pytest.raises(ProviderError) as again:
            await client.cancel(created.id)
    assert {f.reason for f in results.failures} == {"cancelled"} and len(results.failures) == 10
    assert again.value.error_class == "bad_request" and again.value.status == 400


async def test_provider_limits_and_input_checks(simulator_factory, monkeypatch) -> None:
    monkeypatch.setenv(BATCH_CONFIG_ENV, json.dumps({"max_requests": 5, "max_bytes": 4000}))
    url = simulator_factory(SimulatorConfig())
    requests = story_requests(12)
    async with BatchClient(base_url=url, api_key="k") as client:
        (whole,) = build_batch_files(requests, max_requests=100)
        with pytest.raises(ProviderError) as too_big:
            await client.upload(whole)
        assert too_big.value.status == 400 and "at most 4000 bytes" in too_big.value.message

        six = list(build_batch_files(requests[:6], max_requests=6, max_bytes=4000))
        assert len(six) == 1, "six story requests fit in 4000 bytes"
        failed = await client.create(await client.upload(six[0]))
        assert failed.status == "failed" and failed.errors[0].startswith("too_many_tasks")

        mixed = b"\n".join(
            [
                requests[0].line(),
                b"{not json",
                BatchRequest("x", "simulator-judge-1", [{"role": "user", "content": "hi"}]).line(),
                requests[0].line(),
            ]
        )
        bad = await client.create(await client.upload(BatchFile(MODEL, mixed, ())))
        assert bad.status == "failed"
        assert bad.errors == (
            "line 2: invalid_json_line: This line is not parseable as valid JSON.",
            "line 3: model_mismatch: All requests in a batch must use the same model.",
            "line 4: duplicate_custom_id: The custom_id 'task-0' is not unique.",
        )

        # Files cut within the limits all run.
        ids = []
        for batch_file in build_batch_files(requests, max_requests=5, max_bytes=4000):
            created = await client.create(
                await client.upload(batch_file), metadata={"simulator_completion_s": "0"}
            )
            status = await wait_progressing(client, created.id)
            results = await client.results(status, batch_file.custom_ids)
            ids += [s.custom_id for s in results.successes]
        assert sorted(ids) == sorted(r.custom_id for r in requests)


async def test_wrong_key_and_unknown_ids_are_clear_errors(simulator_factory) -> None:
    url = simulator_factory(SimulatorConfig(api_key="right-key"))
    async with BatchClient(base_url=url, api_key="wrong-key") as client:
        with pytest.raises(ProviderError) as denied:
            await client.upload(one_file(story_requests(1)))
    assert denied.value.error_class == "auth" and denied.value.status == 401
    async with BatchClient(base_url=url, api_key="right-key") as client:
        with pytest.raises(ProviderError) as unknown:
            await client.retrieve("batch_nope")
        with pytest.raises(ProviderError) as no_file:
            await client.create("file-nope")
    assert unknown.value.error_class == "not_found" and "batch_nope" in unknown.value.message
    assert no_file.value.status == 404 and "file-nope" in no_file.value.message


async def test_a_restarted_simulator_still_knows_its_batches(
    simulator_factory, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv(BATCH_CONFIG_ENV, json.dumps({"state_dir": str(tmp_path)}))
    batch_file = one_file(story_requests(8))
    with run_simulator(SimulatorConfig(), subprocess_mode=True) as first:
        async with BatchClient(base_url=first, api_key="k") as client:
            file_id = await client.upload(batch_file)
            created = await client.create(
                file_id, metadata={"simulator_completion_s": "1", "job": "j-42"}
            )
            partial = await client.retrieve(created.id)
    assert partial.status == "in_progress"  # and its process is gone
    second = simulator_factory(SimulatorConfig(), subprocess_mode=True)  # a new process
    async with BatchClient(base_url=second, api_key="k") as client:
        found = await client.find("job", "j-42")  # e.g. after a crash before storing the id
        assert found is not None and found.id == created.id
        status = await wait_progressing(client, created.id)
        results = await client.results(status, batch_file.custom_ids)
    assert status.status == "completed" and len(results.successes) == 8
    assert results.missing == () and results.malformed_lines == 0


async def test_batch_work_skips_online_limits_and_latency(simulator_factory) -> None:
    # One request a minute and 5 s per online answer: batch requests are not held to either.
    url = simulator_factory(SimulatorConfig(rpm=1, latency_median_s=5.0))
    started = time.monotonic()
    status, results = await run_batch(url, story_requests(6), simulator_completion_s="0")
    assert status.status == "completed" and len(results.successes) == 6
    assert time.monotonic() - started < 5.0, "no request waited for the online latency"
    assert sim_get(url, "/v1/simulator/stats")["rejected"] == 0
