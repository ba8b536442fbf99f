"""Batch result files in the line shapes OpenAI's Batch API writes, not only our simulator's."""

from __future__ import annotations

import json

import pytest

from generator.batch_files import BatchFailure, BatchSuccess, parse_results
from generator.pricing import PriceTable


def test_result_lines_in_openais_documented_shapes_are_read() -> None:
    """Output and error files as OpenAI's Batch API writes them (ids, request_id, a dated model,
    logprobs, system_fingerprint, `error: null`), not only as our simulator does."""
    ok = {
        "id": "batch_req_6a1b",
        "custom_id": "17",
        "response": {
            "status_code": 200,
            "request_id": "7f3c2e",
            "body": {
                "id": "chatcmpl-9x",
                "object": "chat.completion",
                "created": 1711652795,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "Once upon a time...",
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 88, "completion_tokens": 210, "total_tokens": 298},
                "system_fingerprint": "fp_0ba0d124f1",
            },
        },
        "error": None,
    }
    refused = {
        "id": "batch_req_6a1c",
        "custom_id": "18",
        "response": {
            "status_code": 400,
            "request_id": "7f3c2f",
            "body": {
                "error": {
                    "message": "Invalid 'max_tokens': integer below minimum value.",
                    "type": "invalid_request_error",
                    "param": "max_tokens",
                    "code": "integer_below_min_value",
                }
            },
        },
        "error": None,
    }
    expired = {
        "id": "batch_req_6a1d",
        "custom_id": "19",
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        },
    }
    output = json.dumps(ok).encode() + b"\n"
    errors = b"\n".join(json.dumps(x).encode() for x in (refused, expired)) + b"\n"
    results = parse_results(["17", "18", "19", "20"], output, errors)
    success = results.results["17"]
    assert isinstance(success, BatchSuccess)
    assert (success.text, success.finish_reason) == ("Once upon a time...", "stop")
    assert (success.prompt_tokens, success.completion_tokens) == (88, 210)
    assert success.cost(PriceTable.load(), "gpt-4o-mini") == pytest.approx(
        PriceTable.load().cost("gpt-4o-mini", 88, 210) / 2
    )
    bad = results.results["18"]
    assert isinstance(bad, BatchFailure) and bad.status == 400 and not bad.retryable
    assert "max_tokens" in bad.message
    late = results.results["19"]
    assert isinstance(late, BatchFailure) and late.reason == "expired" and late.retryable
    assert results.missing == ("20",) and results.to_resubmit() == ["19", "20"]
    assert results.malformed_lines == 0
