"""The simulator's ASGI app: an OpenAI-compatible `/v1/chat/completions` and `/v1/models`.

Starlette rather than FastAPI: the handler is on the hot path of the client-ceiling benchmark
and needs no request models or OpenAPI docs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import random
import time
import zlib
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from generator.endpoint import is_reasoning_model
from generator.simulator.answers import answer
from generator.simulator.batch import install_batch_api
from generator.simulator.config import FORCEABLE_FAULTS, SimulatorConfig
from generator.simulator.limits import TIMELINE_BIN_S, ServerCapacity, ServerLimits
from generator.simulator.prompt_cache import TOKEN as _TOKEN
from generator.simulator.prompt_cache import PromptCache, usage_body

log = logging.getLogger(__name__)

CONFIG_ENV = "TINYSTORIES_SIMULATOR_CONFIG"
OWNED_BY = "tinystories-simulator (not a real LLM)"
MODEL_SUFFIX = " (simulator)"
REFUSAL = "I'm sorry, but I can't help with that request."
_MAX_REMEMBERED_PROMPTS = 1_000_000


def count_tokens(text: str) -> int:
    """Words and punctuation marks: close enough to a BPE count for limits and billing."""
    return len(_TOKEN.findall(text))


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def _error(
    status: int,
    message: str,
    kind: str,
    code: str | None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return _json(body, status, headers)


def _reasoning_refusal(model: str, body: dict) -> Response | None:
    """OpenAI's 400s for a reasoning model sent classic sampling parameters."""
    if not is_reasoning_model(model):
        return None
    if "max_tokens" in body:
        message = (
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead."
        )
        return _error(
            400, message, "invalid_request_error", "unsupported_parameter", None, "max_tokens"
        )
    if body.get("temperature", 1) != 1:
        message = (
            f"Unsupported value: 'temperature' does not support {body['temperature']} with this "
            "model. Only the default (1) value is supported."
        )
        return _error(
            400, message, "invalid_request_error", "unsupported_value", None, "temperature"
        )
    return None


# Faults answered before any work: (status, message, code).
_EARLY_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "auth": (401, "Incorrect API key provided.", "invalid_api_key"),
    "permission": (403, "You are not allowed to use this model.", None),
    "not_found": (404, "The model `{model}` does not exist.", "model_not_found"),
    "bad_request": (400, "Invalid 'messages': simulated bad request.", None),
    "content_filter_400": (400, "The prompt was filtered by the content policy.", "content_filter"),
    "insufficient_quota": (
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
    ),
}


class SimulatorState:
    """Mutable state of one simulator process: RNGs, limits and counters."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.faults = random.Random(config.seed)
        self.limits = ServerLimits(config)
        self.capacity = ServerCapacity(config)
        self.ids = itertools.count(1)
        self.seen: dict[int, int] = {}
        self.counts: dict[str, int] = {}
        self.prompt_cache = PromptCache()

    def bump(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def content_rng(self, messages: list[dict]) -> random.Random:
        """Deterministic per (seed, conversation, occurrence): repeats of a prompt still vary."""
        key = zlib.crc32(orjson.dumps(messages))
        if len(self.seen) > _MAX_REMEMBERED_PROMPTS:
            self.seen.clear()
        occurrence = self.seen.get(key, 0)
        self.seen[key] = occurrence + 1
        return random.Random((self.config.seed << 40) ^ (key << 8) ^ occurrence)

    def draw_fault(self) -> str | None:
        """At most one random fault per request, by the configured rates."""
        c = self.config
        roll = self.faults.random()
        for name, rate in (
            ("rate_limit", c.rate_429),
            ("server_error", c.rate_500),
            ("unavailable", c.rate_503),
            ("timeout", c.rate_timeout),
            ("truncated", c.rate_truncated),
            ("refusal", c.rate_refusal),
            ("repetition", c.rate_repetition),
            ("malformed", c.rate_malformed),
            ("no_choices", c.rate_no_choices),
            ("ignore_max_tokens", c.rate_ignore_max_tokens),
            ("disconnect", c.rate_disconnect),
            ("insufficient_quota", c.rate_insufficient_quota),
        ):
            if roll < rate:
                return name
            roll -= rate
        return None

    def latency(self) -> float:
        c = self.config
        if c.latency_median_s <= 0:
            return 0.0
        return c.latency_median_s * math.exp(c.latency_sigma * self.faults.gauss(0.0, 1.0))


def _validate(body: object, config: SimulatorConfig) -> tuple[str, list[dict], int | None]:
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("'model' is required and must be a string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty array")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError(f"'messages[{i}]' must be an object with a 'role'")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError("'max_tokens' must be a positive integer")
    return model, messages, max_tokens


async def chat_completions(request: Request) -> Response:
    state: SimulatorState = request.app.state.sim
    config = state.config
    state.bump("requests")
    if config.api_key is not None:
        if request.headers.get("authorization", "") != f"Bearer {config.api_key}":
            return _error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
    try:
        body = orjson.loads(await request.body())
        model, messages, max_tokens = _validate(body, config)
    except (orjson.JSONDecodeError, ValueError) as exc:
        return _error(400, str(exc), "invalid_request_error", None)
    refused = _reasoning_refusal(model, body)
    if refused is not None:
        return refused
    forced = request.headers.get("x-simulator-fault")
    if forced is not None and forced not in FORCEABLE_FAULTS:
        return _error(400, f"unknown x-simulator-fault {forced!r}", "invalid_request_error", None)
    fault = forced or state.draw_fault()
    early = _EARLY_ERRORS.get(fault or "")
    if early is None and config.strict_models and model not in config.models:
        early = _EARLY_ERRORS["not_found"]
    if early is not None:
        status, message, code = early
        message = message.format(model=model)
        return _error(status, message, "invalid_request_error", code, state.limits.peek(model))

    result = answer(messages, state.content_rng(messages))
    text = REFUSAL if fault == "refusal" else result.text
    if fault == "repetition":  # its last sentences again and again, longer than the story
        loop = " ".join(text.rstrip().split(". ")[-2:]).strip()
        times = max(3, -(-len(text.split()) // max(len(loop.split()), 1)))
        text = f"{text.rstrip()} " + " ".join([loop] * times)
    prompt_tokens = sum(count_tokens(str(m.get("content") or "")) for m in messages) + 3 * len(
        messages
    )
    completion_tokens = count_tokens(text)
    finish_reason = "stop"
    keep = None
    if fault == "ignore_max_tokens" and max_tokens is not None:
        # The whole answer whatever max_tokens said, at least twice the cap (and billed so).
        while completion_tokens <= 2 * max_tokens:
            text = f"{text} {result.text}"
            completion_tokens = count_tokens(text)
    elif max_tokens is not None and completion_tokens > max_tokens:
        keep = max_tokens
    elif fault == "truncated":
        keep = max(1, completion_tokens // 2)
    if keep is not None:
        pieces = list(_TOKEN.finditer(text))
        text = text[: pieces[keep - 1].end()]
        completion_tokens = keep
        finish_reason = "length"
    if fault == "content_filter":
        text, completion_tokens, finish_reason = "", 0, "content_filter"

    charge = state.limits.charge(prompt_tokens, completion_tokens, max_tokens)
    admitted, _wait, headers = state.limits.check(model, charge)
    if not admitted:
        state.bump("rate_limited")
        return _error(
            429,
            f"Rate limit reached for {model} (simulator): please retry after "
            f"{headers['retry-after-ms']} ms.",
            "requests",
            "rate_limit_exceeded",
            headers,
        )
    if fault == "rate_limit":
        state.bump("rate_limited")
        headers = {**headers, "retry-after-ms": "200", "retry-after": "1"}
        return _error(
            429, "Rate limit reached (simulated).", "requests", "rate_limit_exceeded", headers
        )
    if fault in ("server_error", "unavailable"):
        state.bump(fault)
        status = 500 if fault == "server_error" else 503
        return _error(
            status, f"Simulated {fault.replace('_', ' ')}.", "server_error", None, headers
        )

    started = time.perf_counter()
    if fault == "timeout":
        await asyncio.sleep(config.timeout_hang_s)
    else:
        await _generate(state, request, completion_tokens)
    state.bump(result.kind)
    headers["openai-processing-ms"] = str(int((time.perf_counter() - started) * 1000))
    if fault == "disconnect":  # the work is done (and billed); the answer is cut off
        return StreamingResponse(
            _cut_off(b'{"id": "chatcmpl-cut", "object": "chat.completion", "choices": [{"'),
            200,
            headers,
            media_type="application/json",
        )
    if fault == "gateway_timeout":  # a proxy gave up after the work was done (and billed)
        return Response(b"<html><body>504 Gateway Time-out</body></html>", 504, headers)
    if fault == "malformed":
        return Response(
            b'{"id": "chatcmpl-broken", "choices": [{"mess',
            200,
            headers,
            media_type="application/json",
        )
    cached = state.prompt_cache.cached_tokens(model, messages, prompt_tokens)
    usage = usage_body(config.usage_style, prompt_tokens, completion_tokens, cached)
    response_id = f"chatcmpl-sim-{next(state.ids)}"
    if fault == "no_choices":
        return _json(
            {"id": response_id, "object": "chat.completion", "choices": [], "usage": usage},
            200,
            headers,
        )
    payload = {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model + MODEL_SUFFIX,
        "system_fingerprint": "tinystories-simulator",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
    }
    if fault == "no_usage":  # servers that do not report usage
        del payload["usage"]
    return _json(payload, 200, headers)


async def _generate(state: SimulatorState, request: Request, completion_tokens: int) -> None:
    """The configured latency; in slow-server mode also the queue and the generation time."""
    delay = state.latency()  # drawn on arrival, so the draws do not depend on queueing
    capacity = state.capacity
    if not capacity.enabled:
        if delay > 0:
            await asyncio.sleep(delay)
        return
    async with capacity.slot():
        await asyncio.sleep(delay + capacity.generation_s(completion_tokens))
    # A client that gave up (timed out) has closed its connection by now.
    capacity.finished(completion_tokens, client_gone=await request.is_disconnected())


async def list_models(request: Request) -> Response:
    config: SimulatorConfig = request.app.state.sim.config
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": OWNED_BY}
        for name in config.models
    ]
    return _json({"object": "list", "data": data})


async def _cut_off(head: bytes) -> Any:
    """A body that stops after `head`: the server closes the connection mid-answer."""
    yield head
    raise asyncio.CancelledError  # uvicorn drops the connection without logging a traceback


async def stats(request: Request) -> Response:
    """Counters; `?since=S` adds admissions per bin of the simulator's monotonic clock from S."""
    state: SimulatorState = request.app.state.sim
    limits = state.limits
    data: dict[str, Any] = {
        "simulator": True,
        "counts": state.counts,
        "admitted": limits.admitted,
        "rejected": limits.rejected,
        "charged_tokens": limits.charged_tokens,
        "token_accounting": state.config.token_accounting,
        "now": time.monotonic(),
        "pid": os.getpid(),
    }
    if state.capacity.enabled:
        data["server"] = state.capacity.stats()
    since = request.query_params.get("since")
    if since is not None:
        try:
            start = float(since)
        except ValueError:
            return _error(400, "'since' must be a number of seconds", "invalid_request_error", None)
        data["timeline"] = {"bin_s": TIMELINE_BIN_S, "bins": limits.timeline_since(start)}
    return _json(data)


async def health(request: Request) -> Response:
    return _json({"status": "ok", "simulator": True})


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """The ASGI app for one simulator process."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/simulator/stats", stats, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    app.state.sim = SimulatorState(config or SimulatorConfig())
    install_batch_api(app, chat_completions)  # /v1/files, /v1/batches
    return app


def app_from_env() -> Starlette:
    """Factory for uvicorn worker processes: the config comes as JSON in an environment variable."""
    raw = os.environ.get(CONFIG_ENV, "{}")
    return create_app(SimulatorConfig.from_dict(json.loads(raw)))
