"""Where a provider's endpoints are, how it wants the key, which sampling parameters it takes
and which proxy (HTTPS_PROXY / NO_PROXY) reaches it.

Real OpenAI-compatible servers differ in ways a request must follow:
- Azure OpenAI's deployment URLs carry `?api-version=...` and want the key in an `api-key`
  header (sent to Azure hosts and to any URL with an api-version); its v1 form
  (`https://RESOURCE.openai.azure.com/openai/v1`) takes a bearer key.
- OpenAI's reasoning models (o1, o3, o4-mini, gpt-5, ...) refuse `max_tokens` (they want
  `max_completion_tokens`, which also bounds their hidden reasoning tokens) and any
  temperature but the default. A deployment may hide the model behind its own name, so a
  client also learns it from the provider's 400 (`unsupported_parameter` / `unsupported_value`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
# o1, o1-mini, o3-pro, o4-mini, gpt-5, gpt-5-mini, gpt-5.1, ... with an optional date suffix and
# an optional router prefix ("openai/o3" on OpenRouter). gpt-5-chat models take temperature.
_REASONING = re.compile(
    r"^(?:[\w.-]+/)?(?:o\d+(?:-[a-z]+)*|gpt-5(?:\.\d+)?(?!-chat)(?:-[a-z]+)*)(?:-\d{4}-\d{2}-\d{2})?$"
)


def base_url_problem(url: str, *, credentials_ok: bool = False) -> str | None:
    """Why `url` cannot be a provider base URL, or None when it can."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL such as https://api.openai.com/v1"
    if (parts.username or parts.password) and not credentials_ok:
        return "must not contain credentials (user:password@): put the key in OPENAI_API_KEY"
    return None


@dataclass(frozen=True)
class Endpoint:
    """A base URL split into what requests append paths to, its query, and its auth headers."""

    base: str  # scheme://host/path, no trailing slash, no query
    query: dict[str, str] = field(default_factory=dict)
    azure: bool = False

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        host, query = (parts.hostname or "").lower(), dict(parse_qsl(parts.query))
        # An api-version query is Azure's (also behind a company's own gateway domain).
        return cls(
            base=base, query=query, azure=host.endswith(_AZURE_HOSTS) or "api-version" in query
        )

    def url(self, path: str) -> str:
        """`path` (e.g. "/chat/completions") under the base, the base URL's query kept."""
        return f"{self.base}{path}" + (f"?{urlencode(self.query)}" if self.query else "")

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """Bearer everywhere; Azure's deployment endpoints read `api-key` instead."""
        headers = {"Authorization": f"Bearer {api_key}"}
        if self.azure:
            headers["api-key"] = api_key
        return headers


def is_reasoning_model(model: str) -> bool:
    """Whether `model` is named like one of OpenAI's reasoning models."""
    return bool(_REASONING.match(model.lower()))


def sampling_params(
    model: str, max_tokens: int | None, temperature: float, *, reasoning: bool
) -> dict[str, Any]:
    """The length and temperature fields of a Chat Completions body for `model`."""
    params: dict[str, Any] = {}
    if reasoning or is_reasoning_model(model):
        # Only the default temperature is allowed; the limit includes reasoning tokens.
        if max_tokens is not None:
            params["max_completion_tokens"] = max_tokens
        return params
    params["temperature"] = temperature
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    return params


def rejects_classic_params(status: int | None, body: object) -> bool:
    """A 400 saying the model wants `max_completion_tokens` / no temperature (reasoning)."""
    if status != 400 or not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    error = body["error"]
    param, code = error.get("param"), str(error.get("code") or "")
    message = str(error.get("message") or "")
    if param == "max_tokens" and (
        code == "unsupported_parameter" or "max_completion_tokens" in message
    ):
        return True
    return param == "temperature" and code in ("unsupported_value", "unsupported_parameter")


def env_proxy(url: str) -> str | None:
    """The HTTPS_PROXY / HTTP_PROXY for `url` unless NO_PROXY exempts its host, as the SDK's
    httpx client reads them. Resolved once: aiohttp's trust_env looks the environment and
    ~/.netrc up in a thread on every request (~0.4 ms of CPU each)."""
    import urllib.request

    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy
