"""Batch API files, without I/O: request files cut within the provider's limits, and output
and error files read back into one result per custom_id.

A request file holds one model only (the Batch API refuses a file that mixes models) and at
most `max_requests` lines and `max_bytes` bytes. Reading results never raises on bad input: a
line that is not JSON or has no custom_id is counted as malformed, and every expected
custom_id found in neither file is reported missing, so it can be sent again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from generator.endpoint import sampling_params
from generator.errors import RETRYABLE, error_message, redact, status_class, usage_of
from generator.pricing import PriceTable

BATCH_ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS_PER_FILE = 50_000  # OpenAI's limit per batch input file
MAX_BYTES_PER_FILE = 200 * 1024 * 1024  # OpenAI's limit per batch input file (200 MB)
# Batch-level reasons a request was not run; both are worth sending again.
_BATCH_ERROR_REASONS = {"batch_expired": "expired", "batch_cancelled": "cancelled"}


@dataclass(frozen=True)
class BatchRequest:
    """One Chat Completions request of a batch; `custom_id` is the caller's task id."""

    custom_id: str
    model: str
    messages: list[dict]
    max_tokens: int | None = None
    temperature: float = 1.0
    extra: Mapping[str, Any] = field(default_factory=dict)  # other body parameters

    def line(self) -> bytes:
        """The JSONL line (without newline) the Batch API expects for this request."""
        if not isinstance(self.custom_id, str) or not self.custom_id:
            raise ValueError(f"custom_id must be a non-empty string, got {self.custom_id!r}")
        body: dict[str, Any] = {"model": self.model, "messages": self.messages}
        body.update(sampling_params(self.model, self.max_tokens, self.temperature, reasoning=False))
        body.update(self.extra)
        return orjson.dumps(
            {"custom_id": self.custom_id, "method": "POST", "url": BATCH_ENDPOINT, "body": body}
        )


@dataclass(frozen=True)
class BatchFile:
    """One input file: its bytes and the custom_ids it carries, in order."""

    model: str
    content: bytes = field(repr=False)
    custom_ids: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.content)


def build_batch_files(
    requests: Iterable[BatchRequest],
    *,
    max_requests: int = MAX_REQUESTS_PER_FILE,
    max_bytes: int = MAX_BYTES_PER_FILE,
) -> Iterator[BatchFile]:
    """Input files for `requests`: one model per file, each cut at whichever limit comes first.

    A generator, so a paper-sized job holds at most one open file per model in memory.
    ValueError on a custom_id repeated within a file or a request larger than `max_bytes`.
    """
    if max_requests < 1 or max_bytes < 2:
        raise ValueError("max_requests must be >= 1 and max_bytes >= 2")
    open_files: dict[str, tuple[list[bytes], list[str], set[str], list[int]]] = {}

    def close(model: str) -> BatchFile:
        lines, ids, _, _ = open_files.pop(model)
        return BatchFile(model, b"".join(lines), tuple(ids))

    for request in requests:
        line = request.line() + b"\n"
        if len(line) > max_bytes:
            raise ValueError(
                f"request {request.custom_id!r} is {len(line)} bytes, over the "
                f"{max_bytes}-byte limit of one batch file"
            )
        current = open_files.get(request.model)
        if current is not None:
            _, ids, _, size = current
            if len(ids) >= max_requests or size[0] + len(line) > max_bytes:
                yield close(request.model)
                current = None
        if current is None:
            current = open_files[request.model] = ([], [], set(), [0])
        lines, ids, seen, size = current
        if request.custom_id in seen:
            raise ValueError(f"custom_id {request.custom_id!r} appears twice in one batch file")
        lines.append(line)
        ids.append(request.custom_id)
        seen.add(request.custom_id)
        size[0] += len(line)
    for model in list(open_files):
        yield close(model)


@dataclass(frozen=True)
class BatchSuccess:
    """A completed request: the text and what it was billed."""

    custom_id: str
    text: str
    finish_reason: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of prompt_tokens, served from the prompt cache

    def cost(self, prices: PriceTable, model: str | None = None) -> float:
        """USD at the batch price (`model` if the answer names its model differently), cached
        prompt tokens at the cached price with the batch discount on top."""
        return prices.cost(
            model or self.model,
            self.prompt_tokens,
            self.completion_tokens,
            batch=True,
            cached_tokens=self.cached_tokens,
        )


@dataclass(frozen=True)
class BatchFailure:
    """A request the batch did not complete: why, and whether sending it again can help.

    `reason` is an error class of `generator.errors` (`server_error`, `bad_request`,
    `content_filter`, `malformed_response`, ...) or `expired` / `cancelled`.
    """

    custom_id: str
    reason: str
    message: str
    status: int | None
    retryable: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


BatchResult = BatchSuccess | BatchFailure


@dataclass(frozen=True)
class BatchResults:
    """Every expected custom_id is in `results` or in `missing`."""

    results: dict[str, BatchResult]
    missing: tuple[str, ...]
    malformed_lines: int = 0
    unexpected_ids: tuple[str, ...] = ()

    @property
    def successes(self) -> list[BatchSuccess]:
        return [r for r in self.results.values() if isinstance(r, BatchSuccess)]

    @property
    def failures(self) -> list[BatchFailure]:
        return [r for r in self.results.values() if isinstance(r, BatchFailure)]

    def to_resubmit(self) -> list[str]:
        """custom_ids worth another batch: retryable failures and missing results."""
        return [f.custom_id for f in self.failures if f.retryable] + list(self.missing)

    def cost(self, prices: PriceTable, model: str | None = None) -> float:
        """USD billed at the batch price for the completed requests."""
        return sum(s.cost(prices, model) for s in self.successes)


def _read_line(raw: bytes) -> BatchResult | None:
    """One result line, or None when it is malformed."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
        return None
    custom_id = item["custom_id"]
    error, response = item.get("error"), item.get("response")
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        reason = _BATCH_ERROR_REASONS.get(code, "server_error")
        message = redact(str(error.get("message") or code or "batch error"))
        return BatchFailure(custom_id, reason, message, None, True)
    if not isinstance(response, dict) or not isinstance(response.get("status_code"), int):
        return None
    status, body = response["status_code"], response.get("body")
    usage = usage_of(body)
    if status != 200:
        reason = status_class(status, body)
        message = redact(error_message(body, f"HTTP {status}"))
        return BatchFailure(custom_id, reason, message, status, RETRYABLE[reason], *usage)
    choices = body.get("choices") if isinstance(body, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        return BatchFailure(
            custom_id,
            "malformed_response",
            "answer has no choice with a message",
            status,
            True,
            *usage,
        )
    finish_reason = choice.get("finish_reason")
    if finish_reason == "content_filter":
        return BatchFailure(
            custom_id,
            "content_filter",
            "the provider's content filter stopped the completion",
            status,
            False,
            *usage,
        )
    return BatchSuccess(
        custom_id,
        str(message.get("content") or ""),
        finish_reason,
        str(body.get("model") or ""),
        *usage,
    )


def parse_results(
    expected_ids: Iterable[str], output: bytes | None, errors: bytes | None
) -> BatchResults:
    """Results per custom_id from a batch's output and error files (either may be absent).

    A success wins over a failure for the same custom_id, the first of two successes is kept.
    """
    expected = list(dict.fromkeys(expected_ids))
    wanted = set(expected)
    results: dict[str, BatchResult] = {}
    unexpected: list[str] = []
    malformed = 0
    for content in (output, errors):
        for raw in (content or b"").splitlines():
            if not raw.strip():
                continue
            result = _read_line(raw)
            if result is None:
                malformed += 1
                continue
            if result.custom_id not in wanted:
                unexpected.append(result.custom_id)
                continue
            if isinstance(results.get(result.custom_id), BatchSuccess):
                continue
            results[result.custom_id] = result
    missing = tuple(i for i in expected if i not in results)
    return BatchResults(results, missing, malformed, tuple(dict.fromkeys(unexpected)))
