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

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx2
import orjson

from generator.endpoint import Endpoint, env_proxy, rejects_classic_params, sampling_params
from generator.errors import (
    GATEWAY_TIMEOUTS,
    ProviderError,
    Usage,
    connection_cause,
    error_message,
    has_usage,
    json_or_none,
    kept_headers,
    parse_retry_after,
    register_secret,
    response_json_or_none,
    status_class,
    usage_of,
)

log = logging.getLogger(__name__)


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
    usage_reported: bool = True  # False: the answer had no `usage`; the counts above are 0
    cached_tokens: int = 0  # of prompt_tokens, served from the provider's prompt cache


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
        register_secret(api_key)
        self._endpoint = Endpoint.parse(base_url)
        self._url = self._endpoint.url("/chat/completions")
        self._auth = self._endpoint.auth_headers(api_key)
        # Models that refused `max_tokens` or a temperature here: sent reasoning-style since.
        self._reasoning: set[str] = set()
        self._max_connections = max_connections
        self._session: Any = None  # aiohttp session, opened in the loop that uses it
        self._proxy = env_proxy(self._url)
        self._api_key = api_key
        # Built on the first typed request: importing the SDK takes a second or more, which
        # every worker start would pay for a path the default configuration never takes.
        self._sdk: Any = None

    def _typed_sdk(self) -> Any:
        import openai

        if self._sdk is None:
            limits = httpx2.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_connections,
            )
            timeout = httpx2.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
            try:  # the SDK's aiohttp transport (`openai[aiohttp]`) is lighter than httpx's
                http = openai.DefaultAioHttpClient(limits=limits, timeout=timeout)
            except RuntimeError:
                http = openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)
            auth = self._endpoint.auth_headers(self._api_key)
            self._sdk = openai.AsyncOpenAI(
                base_url=self._endpoint.base,
                api_key=self._api_key,
                max_retries=0,
                timeout=timeout,
                http_client=http,
                default_query=self._endpoint.query or None,
                default_headers={"api-key": auth["api-key"]} if "api-key" in auth else None,
            )
        return self._sdk

    async def aclose(self) -> None:
        """Close the shared connection pools."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._sdk is not None:
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
        self, body: bytes, headers: dict[str, str], started: float, timeout_s: float | None
    ) -> tuple[int, dict[str, str], bytes]:
        """POST the request; (status, kept headers, body) or a connection/timeout error."""
        import aiohttp

        per_request: dict[str, Any] = {}
        if timeout_s is not None:
            per_request["timeout"] = aiohttp.ClientTimeout(
                total=timeout_s, sock_connect=min(timeout_s, 10.0)
            )
        try:
            async with self._aiohttp().post(
                self._url,
                data=body,
                headers={**self._auth, "Content-Type": "application/json", **headers},
                proxy=self._proxy,
                **per_request,
            ) as response:
                content = await response.read()
                return response.status, kept_headers(response.headers), content
        except TimeoutError as exc:  # aiohttp.ServerTimeoutError included
            raise self._timeout_error(exc, started, timeout_s) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._connection_error(exc, started) from exc

    def _timeout_error(
        self, exc: BaseException, started: float, timeout_s: float | None = None
    ) -> ProviderError:
        """A timeout, unless the transport reported a refused/reset connection as one."""
        cause = connection_cause(exc)
        if cause is not None:
            return self._connection_error(cause, started)
        return ProviderError(
            "timeout",
            message=f"no answer within {timeout_s or self.timeout_s:g} s",
            latency_s=time.perf_counter() - started,
            maybe_billed=True,
        )

    def _connection_error(self, cause: BaseException, started: float) -> ProviderError:
        import aiohttp

        mid_answer = isinstance(cause, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError)
        if mid_answer:  # the server may have done (and billed) the work: say so
            message = f"{self.base_url} closed the connection mid-answer ({type(cause).__name__})"
        else:
            message = f"connection to {self.base_url} failed: {cause}"
        return ProviderError(
            "connection",
            message=message,
            latency_s=time.perf_counter() - started,
            maybe_billed=mid_answer,
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
        timeout_s: float | None = None,
        **extra: Any,
    ) -> ChatResult:
        """Send one Chat Completions request; raise `ProviderError` on any failure.

        `timeout_s` replaces the client's timeout for this request (the engine's adaptive
        deadline sets a backstop here and enforces its own).
        """
        reasoning = model in self._reasoning
        try:
            return await self._send(
                model, messages, max_tokens, temperature, reasoning, timeout_s, extra
            )
        except ProviderError as exc:
            if reasoning or not exc.reasoning_hint:
                raise
        # A 400 is neither billed nor counted: resend once the way reasoning models want it.
        self._reasoning.add(model)
        log.warning(
            "model %s refused max_tokens/temperature: sending max_completion_tokens and the "
            "default temperature from now on",
            model,
        )
        return await self._send(model, messages, max_tokens, temperature, True, timeout_s, extra)

    async def _send(
        self,
        model: str,
        messages: list[dict],
        max_tokens: int | None,
        temperature: float,
        reasoning: bool,
        timeout_s: float | None,
        extra: dict[str, Any],
    ) -> ChatResult:
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        kwargs.update(sampling_params(model, max_tokens, temperature, reasoning=reasoning))
        extra = dict(extra)
        started = time.perf_counter()
        if not self.typed:
            headers = dict(extra.pop("extra_headers", None) or {})
            kwargs.update(extra.pop("extra_body", None) or {})
            kwargs.update(extra)
            status, kept, content = await self._post(
                orjson.dumps(kwargs), headers, started, timeout_s
            )
            latency = time.perf_counter() - started
            if status >= 400:
                body = json_or_none(content)
                raise self._status_error(status, body, kept, latency, f"HTTP {status}")
            return self._parse(content, status, kept, latency)
        import openai

        sdk = self._typed_sdk()
        try:
            kwargs.update(extra)
            if timeout_s is not None:
                kwargs["timeout"] = timeout_s
            raw = await sdk.chat.completions.with_raw_response.create(**kwargs)
            http_response = raw.http_response
        except openai.APIStatusError as exc:
            latency = time.perf_counter() - started
            headers = kept_headers(exc.response.headers)
            body = response_json_or_none(exc.response)
            raise self._status_error(exc.status_code, body, headers, latency, str(exc)) from exc
        except openai.APITimeoutError as exc:
            raise self._timeout_error(exc, started, timeout_s) from exc
        except openai.APIConnectionError as exc:
            raise self._connection_error(exc.__cause__ or exc, started) from exc
        content = await http_response.aread()
        latency = time.perf_counter() - started
        headers = kept_headers(http_response.headers)
        return self._parse(content, http_response.status_code, headers, latency)

    def _status_error(
        self, status: int, body: object, headers: dict[str, str], latency: float, fallback: str
    ) -> ProviderError:
        usage = usage_of(body)
        message = error_message(body, fallback)
        if status == 404 and "model" not in message.lower():  # not a missing model: the path
            message += f" from {self._url}: is the base URL right (most servers serve /v1)?"
        error = ProviderError(
            status_class(status, body),
            status=status,
            message=message,
            retry_after=parse_retry_after(headers),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            headers=headers,
            latency_s=latency,
            maybe_billed=status in GATEWAY_TIMEOUTS,
        )
        error.reasoning_hint = rejects_classic_params(status, body)
        return error

    def _parse(
        self, content: bytes, status: int, headers: dict[str, str], latency: float
    ) -> ChatResult:
        def malformed(problem: str, usage: Usage = Usage(0, 0)) -> ProviderError:
            return ProviderError(
                "malformed_response",
                status=status,
                message=f"provider answer {problem} (first bytes: {content[:80]!r})",
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                headers=headers,
                latency_s=latency,
            )

        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise malformed("is not JSON") from None
        if not isinstance(body, dict):
            raise malformed("is JSON but not an object")
        usage = usage_of(body)
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise malformed("has no choices", usage)
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise malformed("has a choice without a message", usage)
        finish_reason = choice.get("finish_reason")
        refusal = message.get("refusal")
        if finish_reason == "content_filter" or (refusal and not message.get("content")):
            raise ProviderError(
                "content_filter",
                status=status,
                message=f"the model refused: {refusal}"[:500]
                if refusal
                else "the provider's content filter stopped the completion",
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                headers=headers,
                latency_s=latency,
            )
        return ChatResult(
            model=str(body.get("model") or ""),
            text=message.get("content") or "",
            finish_reason=finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            latency_s=latency,
            headers=headers,
            provider=self.provider,
            usage_reported=has_usage(body),
            cached_tokens=usage.cached_tokens,
        )
