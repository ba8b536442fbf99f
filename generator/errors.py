"""Classified provider failures, and reading a raw provider answer: status, usage, headers.

Every failure of a Chat Completions request becomes a `ProviderError` with an error class that
says whether a retry can help; `generator.retry` decides from it, `generator.client` raises it.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import orjson

if TYPE_CHECKING:  # importing httpx costs every CLI start ~20 ms; only the SDK path needs it
    import httpx2

# What a provider may echo back of a credential: OpenAI-style keys, bearer tokens, key=value
# pairs, and long opaque tokens (hex, base64, JWT-like). Replaced before anything is stored,
# logged or served.
_SECRETS = re.compile(
    r"(?i)(?:\b(?:sk|pk|rk)-[A-Za-z0-9_\-*]{6,}"
    r"|\b(?:gsk|xai|hf|ghp|nvapi)[_-][A-Za-z0-9_\-]{12,}"
    r"|\bbearer\s+[^\s\"',]+"
    r"|\b(?:api[_-]?key|key|token|secret|password|authorization)\b\s*[:=]\s*(?:bearer\s+)?[^\s\"',]+"
    r"|\b[A-Za-z0-9_\-]{32,}(?:\.[A-Za-z0-9_\-]{8,}){0,2}\b"
    r"|://[^/\s:@]+:[^/\s@]+@)"
)


# The keys this process was configured with: removed whatever a provider's message wraps them
# in ("The key local-abc is not valid"), where no pattern could tell them from words.
_KNOWN: set[str] = set()
_MIN_KNOWN_LEN = 8  # shorter values ("x", "none") would blank ordinary words


def register_secret(value: str | None) -> None:
    """Make `redact` remove `value` wherever it appears (an API key this process uses).

    A placeholder a local server is given ("ollama", "lmstudio": lowercase letters only) is no
    secret, and blanking it would blank host names in messages too."""
    if value and len(value) >= _MIN_KNOWN_LEN and not (value.isalpha() and value.islower()):
        _KNOWN.add(value)


def redact(text: str) -> str:
    """`text` with the configured keys and anything that looks like a credential replaced by
    `[redacted]`."""
    for secret in _KNOWN:
        if secret in text:
            text = text.replace(secret, "[redacted]")

    def one(match: re.Match[str]) -> str:
        found = match.group(0)
        if found.startswith("://"):
            return "://[redacted]@"
        if "=" in found or ":" in found:
            name = re.split(r"\s*[:=]\s*", found, maxsplit=1)[0]
            return f"{name}=[redacted]"
        if found.lower().startswith("bearer"):
            return "Bearer [redacted]"
        return "[redacted]"

    return _SECRETS.sub(one, text)


# Error classes and whether a retry can help.
RETRYABLE = {
    "rate_limit": True,
    "server_error": True,
    "timeout": True,
    "connection": True,
    "malformed_response": True,
    "bad_request": False,
    "auth": False,
    "permission": False,
    "not_found": False,
    "content_filter": False,
    "quota": False,  # the account is out of credit: 429 insufficient_quota, 402
}
# A gateway that gave up waiting: the server behind it may still finish (and bill) the work.
GATEWAY_TIMEOUTS = (504, 524)

_KEPT_HEADER_PREFIXES = ("x-ratelimit-", "retry-after", "x-request-id", "openai-processing-ms")


class ProviderError(Exception):
    """A classified failure of one provider request."""

    def __init__(
        self,
        error_class: str,
        retryable: bool | None = None,
        status: int | None = None,
        message: str = "",
        retry_after: float | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        *,
        cached_tokens: int = 0,
        headers: Mapping[str, str] | None = None,
        latency_s: float = 0.0,
        maybe_billed: bool = False,
    ) -> None:
        if error_class not in RETRYABLE:
            raise ValueError(f"unknown provider error class {error_class!r}")
        self.error_class = error_class
        self.retryable = RETRYABLE[error_class] if retryable is None else retryable
        self.status = status
        self.message = redact(message)  # providers echo keys ("Incorrect API key: sk-...")
        self.retry_after = retry_after
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cached_tokens = cached_tokens  # of prompt_tokens, served from the prompt cache
        self.headers = dict(headers or {})
        self.latency_s = latency_s
        # Sent, and perhaps done (and billed) by the provider though its answer never arrived:
        # a timeout, a connection closed mid-answer. Charged at its worst case.
        self.maybe_billed = maybe_billed
        # Who failed, when the client routes among several (a pool member's name); else None.
        self.provider: str | None = None
        # A 400 refusing `max_tokens` / the temperature: a reasoning model (generator.endpoint).
        self.reasoning_hint = False
        super().__init__(f"{error_class} (status {status}): {self.message}")


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(_KEPT_HEADER_PREFIXES)}


def has_usage(body: object) -> bool:
    """Whether an answer reports its token usage (some servers leave it out)."""
    return isinstance(body, dict) and isinstance(body.get("usage"), dict)


class Usage(NamedTuple):
    """Token counts of one answer; `cached_tokens` are the part of `prompt_tokens` the provider
    served from its prompt cache (billed at the cached input price)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


def _count(value: object) -> int:
    """A token count as a provider wrote it; anything but a whole number >= 0 reads as 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and value.is_integer():
        return max(0, int(value))
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return 0


def usage_of(body: object) -> Usage:
    """The usage an answer reports (zeros where it has none). Cached prompt tokens come as
    OpenAI's `prompt_tokens_details.cached_tokens` or DeepSeek's `prompt_cache_hit_tokens`,
    and never exceed the prompt."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return Usage(0, 0)
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = cached or _count(usage.get("prompt_cache_hit_tokens"))
    return Usage(prompt, _count(usage.get("completion_tokens")), min(cached, prompt))


def connection_cause(exc: BaseException) -> BaseException | None:
    """The aiohttp transport reports refused/reset connections as connect *timeouts*; find the
    real connection failure in the cause chain so it is classified as `connection`."""
    try:
        import aiohttp
    except ImportError:
        return None
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, aiohttp.ClientConnectionError) and not isinstance(
            seen, aiohttp.ServerTimeoutError
        ):
            return seen
        if isinstance(seen, ConnectionError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def json_or_none(content: bytes) -> object:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def response_json_or_none(response: httpx2.Response) -> object:
    import httpx2

    try:
        return json_or_none(response.content)
    except httpx2.ResponseNotRead:
        return None


def status_class(status: int, body: object) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    code = ""
    if isinstance(error, dict):
        code = f"{error.get('code') or ''} {error.get('type') or ''}".lower()
    if status == 402 or (status == 429 and "insufficient_quota" in code):
        return "quota"  # no retry helps until a person adds credit
    if status == 429:
        return "rate_limit"
    if status in (408,):
        return "timeout"
    if status == 409 or status >= 500:
        return "server_error"
    if status == 400 and "content_filter" in code:
        return "content_filter"
    return {401: "auth", 403: "permission", 404: "not_found"}.get(status, "bad_request")


def error_message(body: object, fallback: str) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or fallback)
    # {"error": "..."} (Ollama, TGI), {"message": ...} (older vLLM), {"detail": ...} (FastAPI)
    said = [body.get(k) for k in ("error", "message", "detail")] if isinstance(body, dict) else []
    return next((str(s) for s in said if s), fallback)
