"""Async Chat Completions client for any OpenAI-compatible endpoint.

The default path posts pre-serialised JSON over one shared aiohttp session (the transport the
official SDK itself uses with `openai[aiohttp]`): the SDK's request pipeline on top of it cost
about a sixth of a worker's CPU at a few hundred requests per second. `typed=True` sends through
the official `openai` SDK instead (`chat.completions.with_raw_response.create`, its parameter
transforms included). Either way there are no hidden retries (`generator.retry` owns the policy
and must see every attempt), answers are read raw so headers (rate-limit state) are kept, and
every failure becomes a classified `ProviderError`, never a parse crash.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx2
import openai
import orjson

log = logging.getLogger(__name__)

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
}

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
        headers: Mapping[str, str] | None = None,
        latency_s: float = 0.0,
    ) -> None:
        if error_class not in RETRYABLE:
            raise ValueError(f"unknown provider error class {error_class!r}")
        self.error_class = error_class
        self.retryable = RETRYABLE[error_class] if retryable is None else retryable
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.headers = dict(headers or {})
        self.latency_s = latency_s
        super().__init__(f"{error_class} (status {status}): {message}")


@dataclass(frozen=True)
class ChatResult:
    """One successful completion with everything the caller needs to bill and rate-limit it."""

    model: str
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    headers: dict[str, str] = field(default_factory=dict)
    provider: str = "openai"


@dataclass(frozen=True)
class ClientConfig:
    """Where and how to reach a provider; `from_env` reads OPENAI_BASE_URL / OPENAI_API_KEY."""

    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never in logs or reprs
    timeout_s: float = 60.0
    max_connections: int = 512
    provider: str | None = None

    @classmethod
    def from_env(
        cls, *, base_url: str | None = None, api_key: str | None = None, **kwargs: Any
    ) -> ClientConfig:
        """Explicit values win over the environment."""
        return cls(
            base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or None,
            **kwargs,
        )

    @property
    def provider_name(self) -> str:
        """`openai` for the public API, otherwise the endpoint's host (e.g. a vLLM server)."""
        if self.provider:
            return self.provider
        if not self.base_url or "api.openai.com" in self.base_url:
            return "openai"
        return urlparse(self.base_url).hostname or "openai-compatible"

    def build(self) -> ChatClient:
        """Create the client (call inside the process/event loop that will use it)."""
        return ChatClient(
            base_url=self.base_url or "https://api.openai.com/v1",
            api_key=self.api_key or "not-needed",
            timeout_s=self.timeout_s,
            max_connections=self.max_connections,
            provider=self.provider_name,
        )


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


def _kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(_KEPT_HEADER_PREFIXES)}


def _usage(body: object) -> tuple[int, int]:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _connection_cause(exc: BaseException) -> BaseException | None:
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


def _json_or_none(content: bytes) -> object:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _response_json_or_none(response: httpx2.Response) -> object:
    try:
        return _json_or_none(response.content)
    except httpx2.ResponseNotRead:
        return None


def _status_class(status: int, body: object) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    code = ""
    if isinstance(error, dict):
        code = f"{error.get('code') or ''} {error.get('type') or ''}".lower()
    if status == 429:
        return "rate_limit"
    if status in (408,):
        return "timeout"
    if status == 409 or status >= 500:
        return "server_error"
    if status == 400 and "content_filter" in code:
        return "content_filter"
    return {401: "auth", 403: "permission", 404: "not_found"}.get(status, "bad_request")


def _error_message(body: object, fallback: str) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or fallback)
    return fallback


class ChatClient:
    """Async Chat Completions client sharing one connection pool across all requests."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout_s: float = 60,
        max_connections: int = 512,
        provider: str = "openai",
        typed: bool = False,
    ) -> None:
        self.base_url = base_url
        self.provider = provider
        self.timeout_s = timeout_s
        self.typed = typed
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._max_connections = max_connections
        self._session: Any = None  # aiohttp session, opened in the loop that uses it
        limits = httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        timeout = httpx2.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        try:  # the SDK's aiohttp transport (`openai[aiohttp]`) is much lighter than httpx's
            self._http = openai.DefaultAioHttpClient(limits=limits, timeout=timeout)
        except RuntimeError:
            self._http = openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)
        self._sdk = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,
            timeout=timeout,
            http_client=self._http,
        )

    async def aclose(self) -> None:
        """Close the shared connection pools."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._sdk.close()

    def _aiohttp(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(
                    total=self.timeout_s, sock_connect=min(self.timeout_s, 10.0)
                ),
                json_serialize=lambda v: orjson.dumps(v).decode(),
            )
        return self._session

    async def _post(
        self, body: bytes, headers: dict[str, str], started: float
    ) -> tuple[int, dict[str, str], bytes]:
        """POST the request; (status, kept headers, body) or a connection/timeout error."""
        import aiohttp

        try:
            async with self._aiohttp().post(
                self._url,
                data=body,
                headers={**self._auth, "Content-Type": "application/json", **headers},
            ) as response:
                content = await response.read()
                return response.status, _kept_headers(response.headers), content
        except TimeoutError as exc:  # aiohttp.ServerTimeoutError included
            raise self._timeout_error(exc, started) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._connection_error(exc, started) from exc

    def _timeout_error(self, exc: BaseException, started: float) -> ProviderError:
        """A timeout, unless the transport reported a refused/reset connection as one."""
        cause = _connection_cause(exc)
        if cause is not None:
            return self._connection_error(cause, started)
        return ProviderError(
            "timeout",
            message=f"no answer within {self.timeout_s:g} s",
            latency_s=time.perf_counter() - started,
        )

    def _connection_error(self, cause: BaseException, started: float) -> ProviderError:
        return ProviderError(
            "connection",
            message=f"connection to {self.base_url} failed: {cause}",
            latency_s=time.perf_counter() - started,
        )

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def chat(
        self,
        *,
        model: str,
        messages: list[dict],
        max_tokens: int | None = None,
        temperature: float = 1.0,
        **extra: Any,
    ) -> ChatResult:
        """Send one Chat Completions request; raise `ProviderError` on any failure."""
        kwargs: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature}
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        started = time.perf_counter()
        if not self.typed:
            headers = dict(extra.pop("extra_headers", None) or {})
            kwargs.update(extra.pop("extra_body", None) or {})
            kwargs.update(extra)
            status, kept, content = await self._post(orjson.dumps(kwargs), headers, started)
            latency = time.perf_counter() - started
            if status >= 400:
                body = _json_or_none(content)
                prompt_tokens, completion_tokens = _usage(body)
                raise ProviderError(
                    _status_class(status, body),
                    status=status,
                    message=_error_message(body, f"HTTP {status}"),
                    retry_after=parse_retry_after(kept),
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    headers=kept,
                    latency_s=latency,
                )
            return self._parse(content, status, kept, latency)
        try:
            kwargs.update(extra)
            raw = await self._sdk.chat.completions.with_raw_response.create(**kwargs)
            http_response = raw.http_response
        except openai.APIStatusError as exc:
            latency = time.perf_counter() - started
            headers = _kept_headers(exc.response.headers)
            body = _response_json_or_none(exc.response)
            prompt_tokens, completion_tokens = _usage(body)
            raise ProviderError(
                _status_class(exc.status_code, body),
                status=exc.status_code,
                message=_error_message(body, str(exc)),
                retry_after=parse_retry_after(headers),
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                headers=headers,
                latency_s=latency,
            ) from exc
        except openai.APITimeoutError as exc:
            raise self._timeout_error(exc, started) from exc
        except openai.APIConnectionError as exc:
            raise self._connection_error(exc.__cause__ or exc, started) from exc
        content = await http_response.aread()
        latency = time.perf_counter() - started
        headers = _kept_headers(http_response.headers)
        return self._parse(content, http_response.status_code, headers, latency)

    def _parse(
        self, content: bytes, status: int, headers: dict[str, str], latency: float
    ) -> ChatResult:
        def malformed(problem: str, usage: tuple[int, int] = (0, 0)) -> ProviderError:
            return ProviderError(
                "malformed_response",
                status=status,
                message=f"provider answer {problem} (first bytes: {content[:80]!r})",
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
                headers=headers,
                latency_s=latency,
            )

        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise malformed("is not JSON") from None
        if not isinstance(body, dict):
            raise malformed("is JSON but not an object")
        usage = _usage(body)
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise malformed("has no choices", usage)
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise malformed("has a choice without a message", usage)
        finish_reason = choice.get("finish_reason")
        if finish_reason == "content_filter":
            raise ProviderError(
                "content_filter",
                status=status,
                message="the provider's content filter stopped the completion",
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
                headers=headers,
                latency_s=latency,
            )
        return ChatResult(
            model=str(body.get("model") or ""),
            text=message.get("content") or "",
            finish_reason=finish_reason,
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            latency_s=latency,
            headers=headers,
            provider=self.provider,
        )
