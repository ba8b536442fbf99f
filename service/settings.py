"""The service's one settings object, read from the environment (and an optional .env file)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from generator.endpoint import base_url_problem
from generator.errors import register_secret

DEFAULT_STORY_MODEL = "simulator-story-1"
DEFAULT_SUMMARY_MODEL = "simulator-story-mini-1"


class Settings(BaseSettings):
    """Everything the API, the workers and the CLI need to start."""

    model_config = SettingsConfigDict(
        env_prefix="TINYSTORIES_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        # `X=` (compose's `${X:-}`, an empty line in .env) means unset, not "".
        env_ignore_empty=True,
    )

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url")
    )
    admin_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TINYSTORIES_ADMIN_TOKEN"),
    )
    home: Path = Field(
        default=Path(".tinystories"), validation_alias=AliasChoices("TINYSTORIES_HOME")
    )

    # Where the CLI finds the API; unset: this machine at TINYSTORIES_PORT (`api_base`).
    api_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Unset: the simulator's models without a provider, else gpt-4o / gpt-4o-mini.
    default_model: str | None = None
    default_summary_model: str | None = None
    # {"gpt-4": {"rpm": 500, "tpm": 300000}}; models not listed are not limited locally.
    model_limits: dict[str, dict[str, int | None]] = Field(default_factory=dict)
    worker_concurrency: int = Field(default=64, ge=1, le=4096)
    lease_seconds: float = Field(default=60.0, gt=0)
    # A worker unheard of for 3 heartbeats + 1 s is dead and its tasks go back to the queue:
    # 2 s returns a killed worker's leases in about 7 s.
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    reaper_seconds: float = Field(default=5.0, gt=0)
    claim_batch: int = Field(default=32, ge=1)
    # Batch API jobs: tasks per provider batch (OpenAI allows 50,000 requests per file) and
    # how often an open batch is polled.
    batch_size: int = Field(default=5_000, ge=1, le=50_000)
    batch_poll_seconds: float = Field(default=30.0, gt=0)
    # `mode: auto` sends a job online when the Batch API would save less than this (USD, at
    # its worst-case token counts): a few cents are not worth waiting up to 24 h.
    auto_batch_min_saving_usd: float = Field(default=1.0, ge=0)
    max_attempts: int = Field(default=5, ge=1)
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    # Largest job one request may submit (its tasks are written in the request).
    max_job_stories: int = Field(default=1_000_000, ge=1)
    # Largest request body the API reads (413 above); job and export requests are < 10 kB.
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    # Mark the dashboard cookie Secure (sent over HTTPS only): set behind a TLS proxy, where
    # the API itself sees plain HTTP. Unset: Secure when the request itself is HTTPS.
    cookie_secure: bool | None = None
    story_max_tokens: int = Field(default=600, ge=16)
    request_timeout_s: float = Field(default=60.0, gt=0)
    # Seconds of a model's shared rate budget one process takes per round trip
    # (service/work/shared_limits.py).
    limiter_lease_seconds: float = Field(default=0.2, gt=0, le=5)
    db_pool_size: int = Field(default=10, ge=1)
    # Simulator knobs, used only when no provider is configured.
    simulator_rpm: int | None = None
    simulator_tpm: int | None = None
    simulator_latency_s: float = 0.0
    simulator_rate_limit_rate: float = 0.0
    simulator_error_rate: float = 0.0
    simulator_base_url: str | None = None
    pg_extra_options: str = ""
    # Use the simulator even when a provider key is configured (the demo sets it, so a key
    # exported or kept in .env for other work never makes the demo spend money).
    simulator_only: bool = False
    # Where `POST /v1/exports` writes (one directory per export, plus `latest` pointing at
    # the newest finished one); unset: $TINYSTORIES_HOME/exports. Compose shares it with the
    # trainer and grader jobs as /export.
    export_dir: Path | None = None
    # The export's analysis (decontamination, the card's diversity sketch) in a worker process:
    # auto = for exports of 20,000+ stories on 2+ cores; off where those cores already run
    # workers or Postgres, on to force it.
    export_worker: Literal["auto", "on", "off"] = "auto"
    # A file the worker touches after every successful heartbeat: a container healthcheck
    # reads its age (the worker has no port to probe). Unset: no file.
    worker_heartbeat_file: Path | None = None
    # Workers write the per-minute rollups the dashboard reads; off only to measure their cost.
    rollups: bool = True
    # Provider pools (docs/providers.md): a YAML/JSON file, or the JSON itself. Pooled models
    # go to their pool's members; other models to OPENAI_BASE_URL as without pools.
    providers: str | None = None

    @field_validator("model_limits", mode="before")
    @classmethod
    def _parse_limits(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        return value

    @field_validator("openai_api_key", "openai_base_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # `OPENAI_API_KEY=" "` is as unset as an empty one: it must not switch the simulator off.
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("openai_api_key", "admin_token", mode="after")
    @classmethod
    def _kept_out_of_messages(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            register_secret(value.get_secret_value())
        return value

    @field_validator("openai_base_url", mode="after")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        problem = None if value is None else base_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("providers", mode="after")
    @classmethod
    def _pools_load(cls, value: str | None) -> str | None:
        """Check the pools file now, so a bad one stops every process at start-up."""
        if value is None or not value.strip():
            return None
        from generator.errors import redact
        from generator.pool_config import PoolConfigError, load_pools

        try:
            load_pools(value.strip())
        except PoolConfigError as exc:
            # One line; a YAML error quotes the offending line, which may hold a literal key.
            raise ValueError(redact(" ".join(str(exc).split()))) from None
        return value.strip()

    @property
    def uses_pools(self) -> bool:
        """True when provider pools are configured and may be used (not a simulator-only run)."""
        return self.providers is not None and not self.simulator_only

    @property
    def uses_simulator(self) -> bool:
        """True when no real provider (nor a provider pool) is configured, or the simulator is
        forced."""
        if self.simulator_only:
            return True
        return self.openai_api_key is None and self.openai_base_url is None and not self.uses_pools

    @property
    def story_model(self) -> str:
        """Model a job uses when it names none."""
        if self.default_model:
            return self.default_model
        return DEFAULT_STORY_MODEL if self.uses_simulator else "gpt-4o"

    @property
    def summary_model(self) -> str:
        """Model instruct summaries use when the job names none (a cheaper one)."""
        if self.default_summary_model:
            return self.default_summary_model
        return DEFAULT_SUMMARY_MODEL if self.uses_simulator else "gpt-4o-mini"

    @property
    def api_base(self) -> str:
        """TINYSTORIES_API_URL, or the API this machine's `serve` runs (host and port)."""
        if self.api_url:
            return self.api_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def admin_token_path(self) -> Path:
        """Where a generated admin token is kept."""
        return self.home / "admin_token"

    @property
    def exports_root(self) -> Path:
        """Where API exports go."""
        return self.export_dir or self.home / "exports"

    @property
    def pg_dir(self) -> Path:
        """Embedded Postgres directory."""
        return self.home / "pg"


class SettingsInvalid(ValueError):
    """A setting from the environment or .env cannot be used; the message names it."""


def env_name(field: str) -> str:
    """The environment variable a settings field is read from."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"TINYSTORIES_{field.upper()}"


def _field_of(name: str) -> str:
    """The settings field a validation error's location names (a field or an alias)."""
    if name in Settings.model_fields:
        return name
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and name in alias.choices:
            return field
    return name


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        field = _field_of(str(first["loc"][0])) if first["loc"] else ""
        value = first.get("input")
        shown = "" if isinstance(value, dict) or field in _SECRET_FIELDS else f"={value!r}"
        message = str(first["msg"]).removeprefix("Value error, ")
        return f"{env_name(field)}{shown}: {message}"
    match = re.search(r'field "(\w+)"', str(exc))
    if match:
        cause = exc.__cause__
        reason = f"not valid JSON ({cause})" if isinstance(cause, ValueError) else str(exc)
        return f"{env_name(match.group(1))}: {reason}"
    return str(exc)


# Never echoed in an error line (inline pools JSON may hold a literal key).
_SECRET_FIELDS = frozenset(
    {"openai_api_key", "admin_token", "database_url", "openai_base_url", "providers"}
)


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, with explicit overrides (None means "not given");
    a bad value raises SettingsInvalid with one line naming the variable, never its secret."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (ValidationError, SettingsError) as exc:
        raise SettingsInvalid(_describe(exc)) from None
