"""The simulator's Batch API: `/v1/files` and `/v1/batches`, answered by its chat logic.

Each batch request goes through the simulator's own `/v1/chat/completions` handler (same
stories, judge answers and usage), on a view of the simulator without online rate limits,
latency or random faults: the Batch API has its own queue, and batch failures come from
`BatchConfig.failure_rate` instead. Batch work is counted in the simulator's counters as
`batch_*` (`/v1/simulator/stats`), with tokens per model at `/v1/simulator/batch_stats`.

Settings come from the constructor or, as JSON, from the TINYSTORIES_SIMULATOR_BATCH
environment variable (read when the app is built); a batch's metadata may override its own
timing and fault rates as `simulator_<name>` (see `batch_config.OVERRIDABLE`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from generator.simulator.batch_config import BATCH_ENDPOINT, TERMINAL, BatchConfig, InputError
from generator.simulator.batch_store import BatchRecord, BatchStore

BATCH_CONFIG_ENV = "TINYSTORIES_SIMULATOR_BATCH"
_MAX_METADATA_KEYS, _MAX_KEY_CHARS, _MAX_VALUE_CHARS = 16, 64, 512

ChatHandler = Callable[[Request], Awaitable[Response]]


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _json(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, status
    )


def config_from_env() -> BatchConfig:
    """The batch settings named by TINYSTORIES_SIMULATOR_BATCH (JSON), or the defaults."""
    raw = os.environ.get(BATCH_CONFIG_ENV)
    if not raw:
        return BatchConfig()
    try:
        return BatchConfig.from_dict(json.loads(raw))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{BATCH_CONFIG_ENV}: {exc}") from None


def _store(request: Request) -> BatchStore:
    return request.app.state.batches


def _denied(request: Request) -> Response | None:
    key = request.app.state.sim.config.api_key
    if key is not None and request.headers.get("authorization", "") != f"Bearer {key}":
        return _error(401, "Incorrect API key provided.", code="invalid_api_key")
    return None


# ---- files ------------------------------------------------------------------------------


async def upload_file(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    store = _store(request)
    try:
        form = await request.form(max_files=1, max_fields=4)
    except (MultiPartException, AssertionError) as exc:
        return _error(400, f"expected a multipart upload with 'file' and 'purpose': {exc}")
    purpose, upload = form.get("purpose"), form.get("file")
    if purpose != "batch":
        return _error(400, f"Invalid value for 'purpose': {purpose!r}; use 'batch'.", "purpose")
    if not isinstance(upload, UploadFile):
        return _error(400, "Missing required parameter: 'file'.", "file")
    filename = upload.filename or "upload.jsonl"
    if not filename.endswith(".jsonl"):
        return _error(400, "Invalid file format for Batch API. Must be .jsonl", "file")
    limit = store.config.max_bytes
    content = await upload.read(limit + 1)
    if len(content) > limit:
        return _error(
            400, f"File is too large: a batch input file may have at most {limit} bytes.", "file"
        )
    return _json(store.add_file(filename, "batch", content).to_api())


def _file_or_404(request: Request) -> Any:
    file_id = request.path_params["file_id"]
    stored = _store(request).files.get(file_id)
    if stored is None:
        return _error(404, f"No such File object: {file_id}", "file_id")
    return stored


async def retrieve_file(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    stored = _file_or_404(request)
    return stored if isinstance(stored, Response) else _json(stored.to_api())


async def file_content(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    stored = _file_or_404(request)
    if isinstance(stored, Response):
        return stored
    return Response(stored.content, 200, media_type="application/octet-stream")


# ---- batches ----------------------------------------------------------------------------


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > _MAX_METADATA_KEYS:
        raise InputError(f"'metadata' must be an object of at most {_MAX_METADATA_KEYS} keys.")
    for key, item in value.items():
        if len(key) > _MAX_KEY_CHARS or not isinstance(item, str) or len(item) > _MAX_VALUE_CHARS:
            raise InputError(
                f"'metadata' keys must have at most {_MAX_KEY_CHARS} characters and values be "
                f"strings of at most {_MAX_VALUE_CHARS}; {key!r} is not."
            )
    return dict(value)


async def create_batch(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _error(400, "request body must be JSON")
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str) or not input_file_id:
        return _error(
            400,
            "Missing required parameter: 'input_file_id'.",
            "input_file_id",
            "missing_required_parameter",
        )
    if body.get("endpoint") != BATCH_ENDPOINT:
        return _error(
            400, f"Invalid 'endpoint': the simulator batches only {BATCH_ENDPOINT}.", "endpoint"
        )
    if body.get("completion_window") != "24h":
        return _error(
            400, "Invalid 'completion_window': only '24h' is supported.", "completion_window"
        )
    try:
        record = _store(request).create(input_file_id, _metadata(body.get("metadata")))
    except InputError as exc:
        return _error(exc.status, str(exc), exc.param or "metadata")
    return _json(record.to_api())


async def _batch_or_404(request: Request) -> BatchRecord | Response:
    batch_id = request.path_params["batch_id"]
    record = _store(request).batches.get(batch_id)
    if record is None:
        return _error(404, f"No batch found with id '{batch_id}'.", "batch_id")
    return record


async def retrieve_batch(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    record = await _batch_or_404(request)
    if isinstance(record, Response):
        return record
    await _store(request).advance(record)
    return _json(record.to_api())


async def cancel_batch(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    record = await _batch_or_404(request)
    if isinstance(record, Response):
        return record
    try:
        await _store(request).cancel(record)
    except InputError as exc:
        return _error(exc.status, str(exc))
    return _json(record.to_api())


async def list_batches(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    store = _store(request)
    try:
        limit = int(request.query_params.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        return _error(400, "'limit' must be an integer from 1 to 100.", "limit")
    ordered = sorted(store.batches.values(), key=lambda b: (b.created_at, b.id), reverse=True)
    after = request.query_params.get("after")
    if after is not None:
        ids = [b.id for b in ordered]
        if after not in ids:
            return _error(400, f"No batch found with id '{after}'.", "after")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[:limit]
    for record in page:
        await store.advance(record)
    return _json(
        {
            "object": "list",
            "data": [b.to_api() for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(ordered) > limit,
        }
    )


async def batch_stats(request: Request) -> Response:
    """Batch work as the provider counted it: requests, answers by kind, tokens per model."""
    store = _store(request)
    by_status: dict[str, int] = {}
    for record in store.batches.values():
        by_status[record.status] = by_status.get(record.status, 0) + 1
    return _json(
        {
            "batch": True,
            "counts": {k: v for k, v in store.counts.items() if k.startswith("batch_")},
            "answers": request.app.state.batch_view.state.sim.counts,
            "billed": store.billed,
            "batches": by_status,
            "open_batches": sum(1 for b in store.batches.values() if b.status not in TERMINAL),
        }
    )


ROUTES = [
    Route("/v1/files", upload_file, methods=["POST"]),
    Route("/v1/files/{file_id}", retrieve_file, methods=["GET"]),
    Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", retrieve_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
    Route("/v1/simulator/batch_stats", batch_stats, methods=["GET"]),
]


def install_batch_api(
    app: Starlette, chat_handler: ChatHandler, config: BatchConfig | None = None
) -> BatchStore:
    """Add the Batch API routes to a simulator app; batch requests are answered by
    `chat_handler` (the app's `/v1/chat/completions` handler)."""
    sim = app.state.sim
    online = sim.config
    # No online limits, latency, slow-server queue or random faults for batch work.
    names = {f.name for f in dataclasses.fields(online)}
    quiet: dict[str, Any] = {name: 0.0 for name in names if name.startswith("rate_")}
    unlimited = ("rpm", "tpm", "latency_p99_s", "tokens_per_s", "capacity")
    quiet.update({name: None for name in unlimited if name in names})
    view_config = dataclasses.replace(online, latency_median_s=0.0, **quiet)
    # The handler reads `request.app.state.sim`: a state of its own keeps batch work out of
    # the online rate limits and answer counters.
    view = SimpleNamespace(state=SimpleNamespace(sim=type(sim)(view_config)))
    auth = [(b"authorization", f"Bearer {online.api_key}".encode())] if online.api_key else []

    async def respond(body: dict, fault: str | None) -> tuple[int, Any]:
        payload = orjson.dumps(body)
        headers = [(b"content-type", b"application/json"), *auth]
        if fault is not None:
            headers.append((b"x-simulator-fault", fault.encode()))

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": payload, "more_body": False}

        scope = {
            "type": "http",
            "method": "POST",
            "path": BATCH_ENDPOINT,
            "headers": headers,
            "query_string": b"",
            "app": view,
        }
        response = await chat_handler(Request(scope, receive))
        try:
            return response.status_code, orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return 500, {"error": {"message": "The server had an error.", "type": "server_error"}}

    store = BatchStore(config or config_from_env(), respond, sim.counts)
    app.state.batches = store
    app.state.batch_view = view
    app.router.routes.extend(ROUTES)
    return store
