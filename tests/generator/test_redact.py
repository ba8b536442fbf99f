"""Provider error text never carries a credential onward: keys, bearer tokens, key=value
pairs, long opaque tokens and URL credentials are replaced; ordinary messages are kept."""

from __future__ import annotations

import pytest

from generator.errors import ProviderError, redact

SECRET = "sk-proj-abcDEF1234567890xyzQRS"


@pytest.mark.parametrize(
    "text",
    [
        f"Incorrect API key provided: {SECRET}. You can find your API key at the dashboard.",
        f"Authorization: Bearer {SECRET} is not valid",
        f"api_key={SECRET}",
        f'{{"error": {{"message": "bad key {SECRET}"}}}}',
        f"upstream https://user:{SECRET}@proxy.example/v1 refused",
        "token 0123456789abcdef0123456789abcdef0123 expired",
    ],
)
def test_credentials_are_redacted(text: str) -> None:
    out = redact(text)
    assert SECRET not in out and "0123456789abcdef0123456789abcdef" not in out
    assert "[redacted]" in out


@pytest.mark.parametrize(
    "text",
    [
        "Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM): "
        "Limit 500, Used 500, Requested 1. Please try again in 120ms.",
        "The model `gpt-4o-mini-2024-07-18` does not exist or you do not have access to it.",
        "This model's maximum context length is 16385 tokens.",
    ],
)
def test_ordinary_messages_are_kept(text: str) -> None:
    assert redact(text) == text


def test_provider_errors_hold_only_redacted_text() -> None:
    error = ProviderError("auth", status=401, message=f"Incorrect API key provided: {SECRET}")
    assert SECRET not in error.message and SECRET not in str(error)
    assert error.retryable is False
