"""What the engine hands back: one `RequestRecord` per attempt, one `StoryOutcome` per story."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True)
class RequestRecord:
    """One attempt against the provider."""

    kind: str
    model: str
    provider: str
    outcome: Literal["ok", "error"]
    error_class: str | None
    status: int | None
    attempt: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    finish_reason: str | None
    started_at: datetime
    error: str | None = None
    # Of prompt_tokens, those served from the provider's prompt cache (billed lower). Rows
    # written before it existed lack the key: read it as 0.
    cached_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        return data


@dataclass
class StoryOutcome:
    """The result of one story request, successful or not."""

    recipe: Any
    prompt: str
    text: str | None
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    finish_reason: str | None
    checks: Any | None
    requests: list[RequestRecord] = field(default_factory=list)
    error: str | None = None
    error_class: str | None = None
    response_model: str | None = None
    cached_tokens: int = 0  # of prompt_tokens, served from the provider's prompt cache

    @property
    def accepted(self) -> bool:
        return self.error is None and self.checks is not None and bool(self.checks.accepted)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready row (requests are kept separately)."""
        return {
            "recipe": self.recipe.to_dict(),
            "prompt": self.prompt,
            "text": self.text,
            "model": self.model,
            "response_model": self.response_model,
            "provider": self.provider,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cached_tokens": self.cached_tokens,
            },
            "cost_usd": self.cost_usd,
            "latency_s": round(self.latency_s, 4),
            "finish_reason": self.finish_reason,
            "checks": self.checks.to_dict() if self.checks is not None else None,
            "accepted": self.accepted,
            "attempts": len(self.requests),
            "error": self.error,
            "error_class": self.error_class,
        }
