"""Simulator settings: limits, latency distribution, slow-server mode and fault rates."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from generator.simulator.prompt_cache import USAGE_STYLES

DEFAULT_MODELS = ("simulator-story-1", "simulator-story-mini-1", "simulator-judge-1")

# Values of the `x-simulator-fault` request header: force one fault on one request (tests).
# How a request is charged against TPM: "actual" = prompt + generated tokens (vLLM, TGI);
# "max_tokens" = prompt + the request's `max_tokens`, at admission, never refunded (what
# OpenAI and Azure are documented to count toward the limit).
TOKEN_ACCOUNTING = ("actual", "max_tokens")

FORCEABLE_FAULTS = (
    "rate_limit",
    "server_error",
    "unavailable",
    "timeout",
    "truncated",
    "refusal",
    "repetition",
    "content_filter",
    "content_filter_400",
    "malformed",
    "no_choices",
    "ignore_max_tokens",
    "disconnect",
    "bad_request",
    "auth",
    "permission",
    "not_found",
    "insufficient_quota",
    "no_usage",
    "gateway_timeout",
)


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated provider behaves. Rates are probabilities per request."""

    rpm: int | None = None
    tpm: int | None = None
    burst_s: float = 2.0  # bucket capacity in seconds of refill (sub-minute enforcement)
    token_accounting: str = "actual"  # one of TOKEN_ACCOUNTING
    latency_median_s: float = 0.0
    latency_p99_s: float | None = None  # log-normal spread; None = 4x the median
    # Slow-server mode (a llama.cpp/vLLM box on one GPU or CPU): each request generates at
    # `tokens_per_s`, at most `capacity` at once; the rest wait in arrival order, so latency
    # grows with concurrency. None = unlimited.
    tokens_per_s: float | None = None
    capacity: int | None = None
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_timeout: float = 0.0
    timeout_hang_s: float = 120.0  # a "timeout" answers after this long (past client timeouts)
    rate_truncated: float = 0.0
    rate_refusal: float = 0.0
    rate_repetition: float = 0.0  # a story whose end loops, as a model stuck repeating writes
    rate_malformed: float = 0.0
    rate_no_choices: float = 0.0
    # Servers that misbehave: one that answers past `max_tokens` (and bills it), one that closes
    # the connection mid-answer (after doing the work).
    rate_ignore_max_tokens: float = 0.0
    rate_disconnect: float = 0.0
    rate_insufficient_quota: float = 0.0  # an account out of credit (429 insufficient_quota)
    seed: int = 0
    models: tuple[str, ...] = DEFAULT_MODELS
    strict_models: bool = False  # True: unknown model names get 404 like the real API
    api_key: str | None = None  # when set, other bearer tokens get 401
    # How answers report prompt-cache hits: "openai" (`prompt_tokens_details.cached_tokens`)
    # or "deepseek" (`prompt_cache_hit_tokens` / `prompt_cache_miss_tokens`).
    usage_style: str = "openai"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.startswith("rate_"):
                value = getattr(self, f.name)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{f.name} must be between 0 and 1, got {value}")
        for name in ("rpm", "tpm", "tokens_per_s", "capacity"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.token_accounting not in TOKEN_ACCOUNTING:
            raise ValueError(
                f"token_accounting must be one of {TOKEN_ACCOUNTING}, got {self.token_accounting!r}"
            )
        if self.usage_style not in USAGE_STYLES:
            raise ValueError(f"usage_style must be one of {USAGE_STYLES}, got {self.usage_style!r}")
        if self.latency_median_s < 0:
            raise ValueError("latency_median_s must be >= 0")
        p99 = self.latency_p99_s
        if p99 is not None and self.latency_median_s > 0 and p99 < self.latency_median_s:
            raise ValueError("latency_p99_s must be >= latency_median_s")

    @property
    def single_worker(self) -> bool:
        """Limits and capacity are per process: several workers would each enforce their own."""
        return bool(self.rpm or self.tpm or self.capacity)

    @property
    def latency_sigma(self) -> float:
        """Log-normal sigma giving the configured p99 (z(0.99) = 2.326)."""
        if self.latency_median_s <= 0:
            return 0.0
        p99 = self.latency_p99_s or 4 * self.latency_median_s
        return math.log(p99 / self.latency_median_s) / 2.3263478740408408

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = list(self.models)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulatorConfig:
        data = dict(data)
        if "models" in data:
            data["models"] = tuple(data["models"])
        return cls(**data)
