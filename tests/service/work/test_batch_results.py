"""A finished batch's lines as task results: cached prompt tokens billed at the cached price,
with the batch discount on top, in request rows and stories alike."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from generator.batch_files import parse_results
from generator.checks import StoryChecker
from generator.pricing import LOCAL_MODELS_ENV, PRICING_ENV, PriceTable
from generator.prompts import DEFAULT_TEMPLATE_VERSION
from service.work.batch_results import task_results
from service.work.task import StoryProcessor
from vocab import Recipe

MODEL = "gpt-4o-mini"
USAGE = {
    "prompt_tokens": 2048,
    "completion_tokens": 100,
    "total_tokens": 2148,
    "prompt_tokens_details": {"cached_tokens": 1536},
}


def _line(custom_id: str, status: int) -> bytes:
    message = {"role": "assistant", "content": "Tom saw a red ball. He was happy. The end."}
    body: dict[str, Any] = {"model": MODEL, "usage": USAGE}
    if status == 200:
        body["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
    else:
        body["error"] = {"message": "bad request", "type": "invalid_request_error"}
    response = {"status_code": status, "request_id": "req_1", "body": body}
    return orjson.dumps({"id": "b1", "custom_id": custom_id, "response": response})


async def test_batch_lines_bill_cached_tokens_at_the_discounted_cached_price(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PRICING_ENV, raising=False)
    monkeypatch.delenv(LOCAL_MODELS_ENV, raising=False)
    pricing = PriceTable.load()
    engine = SimpleNamespace(pricing=pricing, checker=StoryChecker())
    processor = StoryProcessor(SimpleNamespace(for_task=lambda task: engine))
    recipe = Recipe(verb="see", noun="ball", adjective="red", features=())
    tasks = [
        SimpleNamespace(
            id=uuid.uuid4(),
            job_id=uuid.uuid4(),
            model=MODEL,
            recipe=recipe.to_dict(),
            template_version=DEFAULT_TEMPLATE_VERSION,
            attempts=1,
            instruct=False,
        )
        for _ in range(2)
    ]
    output = _line(str(tasks[0].id), 200) + b"\n" + _line(str(tasks[1].id), 400)
    results = parse_results([str(t.id) for t in tasks], output, None)
    status = SimpleNamespace(created_at=time.time())
    done, online = await task_results(processor, tasks, results, status, provider="openai")

    # gpt-4o-mini: $0.15 input, $0.075 cached, $0.60 output; the batch bills half.
    full = (512 * 0.15 + 1536 * 0.075 + 100 * 0.60) / 1e6
    assert online == pytest.approx(2 * full)
    (ok, _), (failed, _) = ((r, t) for t, r in done)
    assert ok.outcome == "story" and failed.outcome == "fail"
    for result in (ok, failed):
        (record,) = result.requests
        assert record.cached_tokens == 1536
        assert record.cost_usd == pytest.approx(full * 0.5)
    assert float(ok.story["cost_usd"]) == pytest.approx(full * 0.5, abs=1e-8)
