"""Settings of the simulator's Batch API, and the checks an input file must pass.

The checks and their error codes follow the Batch API's documented ones (`invalid_json_line`,
`url_mismatch`, `model_mismatch`, `duplicate_custom_id`, `empty_file`, `too_many_tasks`): a file
that fails them gives a batch with status `failed` and `errors.data[]` naming the line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from generator.simulator.config import FORCEABLE_FAULTS

BATCH_ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})
# Faults a batch request may be given: the ones that answer at once with a status and a body.
_ONLINE_ONLY = ("timeout", "malformed", "no_usage", "gateway_timeout")
BATCH_FAULTS = tuple(f for f in FORCEABLE_FAULTS if f not in _ONLINE_ONLY)
# Batch behaviour a batch's metadata may override, as `simulator_<name>` (tests, demos).
OVERRIDABLE = (
    "completion_s",
    "validation_s",
    "window_s",
    "failure_rate",
    "failure_fault",
    "malformed_rate",
    "drop_rate",
)
_MAX_LISTED_ERRORS = 100


@dataclass(frozen=True)
class BatchConfig:
    """How the simulated Batch API behaves; rates are probabilities per request."""

    completion_s: float = 2.0  # in_progress -> last answer (the real API: minutes to 24 h)
    validation_s: float = 0.0  # time a new batch spends "validating"
    window_s: float = 86_400.0  # the 24h completion window: a batch not done by then expires
    failure_rate: float = 0.0  # share of requests answered with an error (the error file)
    failure_fault: str = "server_error"  # the simulator fault those requests get
    malformed_rate: float = 0.0  # share of result lines written as broken JSON
    drop_rate: float = 0.0  # share of results left out of both files
    max_requests: int = 50_000  # per input file (OpenAI: 50,000)
    max_bytes: int = 200 * 1024 * 1024  # per input file (OpenAI: 200 MB)
    state_dir: str | None = None  # keep files and batches here, so a restart still knows them
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("failure_rate", "malformed_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        for name in ("completion_s", "validation_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s}")
        if self.failure_fault not in BATCH_FAULTS:
            raise ValueError(
                f"failure_fault must be one of {BATCH_FAULTS}, got {self.failure_fault!r}"
            )
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ValueError("max_requests and max_bytes must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown batch setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def overridden(self, metadata: Mapping[str, str]) -> BatchConfig:
        """This config with `simulator_<name>` metadata values applied; ValueError names the key."""
        changes: dict[str, Any] = {}
        for name in OVERRIDABLE:
            key = f"simulator_{name}"
            if key in metadata:
                raw = metadata[key]
                try:
                    changes[name] = raw if name == "failure_fault" else float(raw)
                except ValueError:
                    raise ValueError(f"metadata.{key} must be a number, got {raw!r}") from None
        try:
            return dataclasses.replace(self, **changes)
        except ValueError as exc:
            raise ValueError(f"metadata: {exc}") from None


class InputError(ValueError):
    """A request the Batch API refuses, with the parameter it names."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


def parse_input(
    content: bytes, *, max_requests: int | None
) -> tuple[list[tuple[str, dict]], list[dict]]:
    """(requests, errors) of a batch input file, checked as the Batch API checks it."""
    requests: list[tuple[str, dict]] = []
    errors: list[dict] = []
    seen: set[str] = set()
    model: str | None = None

    def error(code: str, message: str, line: int, param: str | None = None) -> None:
        errors.append({"code": code, "message": message, "param": param, "line": line})

    for number, raw in enumerate(content.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            error("invalid_json_line", "This line is not parseable as valid JSON.", number)
            continue
        if not isinstance(item, dict):
            error("invalid_request", "Each line must be a JSON object.", number)
            continue
        custom_id, body = item.get("custom_id"), item.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            error("missing_required_parameter", "Missing 'custom_id'.", number, "custom_id")
        elif item.get("method") != "POST":
            error("invalid_request", "'method' must be 'POST'.", number, "method")
        elif item.get("url") != BATCH_ENDPOINT:
            error("url_mismatch", f"'url' must be {BATCH_ENDPOINT!r}.", number, "url")
        elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
            error("missing_required_parameter", "Missing 'body.model'.", number, "body.model")
        elif model is not None and body["model"] != model:
            error("model_mismatch", "All requests in a batch must use the same model.", number)
        elif custom_id in seen:
            error("duplicate_custom_id", f"The custom_id {custom_id!r} is not unique.", number)
        else:
            model = body["model"]
            seen.add(custom_id)
            requests.append((custom_id, body))
    if not requests and not errors:
        error("empty_file", "The input file has no requests.", 0)
    if max_requests is not None and len(requests) > max_requests:
        error(
            "too_many_tasks",
            f"The input file has {len(requests)} requests; a batch may have at most "
            f"{max_requests}.",
            0,
        )
    return requests, errors[:_MAX_LISTED_ERRORS]
