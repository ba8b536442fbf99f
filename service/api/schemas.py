"""Request and response bodies of the REST API."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from service.store.jobs import MIN_BUDGET_USD
from service.store.storable import refuse_lone_surrogates

BUDGET_RULE = (
    f"at least {MIN_BUDGET_USD:.9f} USD: budgets are kept to 9 decimal places, a smaller one "
    "would be 0"
)


class PriceIn(BaseModel):
    """A model's price in USD per million tokens (0 for a local model)."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, le=10_000, description="USD per 1M prompt tokens")
    output: float = Field(ge=0, le=10_000, description="USD per 1M completion tokens")


# Words per role of a job's own vocabulary: the packaged list has 1,096 nouns; a request body
# stays under TINYSTORIES_MAX_REQUEST_BYTES (1 MiB) only with short words at this many.
MAX_VOCABULARY_WORDS = 10_000
MAX_WORD_CHARS = 64
# vocab.word_problem's rule in JSON Schema (Unicode property escapes, as ECMA-262 with the u
# flag reads them): letters of any script, marks after a letter, parts joined by - or '.
WORD_PATTERN = r"^\p{L}[\p{L}\p{M}]*(?:['-]\p{L}[\p{L}\p{M}]*)*$"


def _one_word(value: str) -> str:
    from vocab import word_problem

    word = unicodedata.normalize("NFC", value)  # "cafe\u0301" is "café"
    problem = word_problem(word)
    if problem is not None:
        raise ValueError(problem)
    return word


def _no_repeats(words: list[str]) -> list[str]:
    first: dict[str, int] = {}
    for i, word in enumerate(words):
        if word in first:
            raise ValueError(f"{word!r} is listed twice (items {first[word]} and {i})")
        first[word] = i
    return words


Word = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_WORD_CHARS),
    AfterValidator(_one_word),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_WORD_CHARS, "pattern": WORD_PATTERN}
    ),
]
WordList = Annotated[
    list[Word],
    Field(min_length=1, max_length=MAX_VOCABULARY_WORDS, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_no_repeats),
]


class VocabularyWordsIn(BaseModel):
    """The words recipes are drawn from, by role."""

    model_config = ConfigDict(extra="forbid")

    noun: WordList
    verb: WordList
    adjective: WordList


class VocabularyIn(BaseModel):
    """A job's own vocabulary: recipes come from it and stories are checked against it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        default="custom", min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"
    )
    words: VocabularyWordsIn

    def build(self) -> Any:
        """The vocab.Vocabulary (the six standard features)."""
        from vocab import vocabulary_from_words

        return vocabulary_from_words(self.words.model_dump(), name=self.name)


class VocabularyOut(BaseModel):
    """Which vocabulary a job draws from: its name, content hash and words per role."""

    name: str
    sha256: str = Field(description="what `tinystories vocab stats --file` prints for the file")
    noun: int
    verb: int
    adjective: int
    custom: bool = Field(description="false: the packaged default vocabulary")


class JobCreate(BaseModel):
    """POST /v1/jobs body."""

    model_config = ConfigDict(extra="forbid")

    n_stories: int = Field(ge=1, le=10_000_000)
    model: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00]+$")
    models: dict[str, Annotated[float, Field(gt=0, le=1e6)]] | None = Field(
        default=None, description="weighted mix, e.g. {'gpt-4': 0.5, 'gpt-3.5-turbo': 0.5}"
    )
    instruct: bool = False
    summary_model: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[^\x00]+$"
    )
    # JSON-safe: above 2**53 many clients (and JSON parsers) round integers.
    seed: int = Field(default=0, ge=0, le=2**53 - 1)
    budget_usd: float = Field(ge=MIN_BUDGET_USD, le=1_000_000, description=BUDGET_RULE)
    priority: int = Field(default=0, ge=-1000, le=1000)
    template_version: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"
    )
    feature_probs: dict[str, Annotated[float, Field(ge=0, le=1)]] | None = None
    max_tokens: int | None = Field(default=None, ge=16, le=8192)
    name: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00]*$")
    price: PriceIn | None = Field(
        default=None,
        description="the price of every model this job uses (its story and summary models), "
        "over the price table: a local model at 0, a negotiated rate",
    )
    prices: dict[str, PriceIn] | None = Field(
        default=None, description="per-model prices, over `price` and the price table"
    )
    mode: Literal["online", "batch", "auto"] = Field(
        default="online",
        description="online: calls as the workers go; batch: the provider's Batch API (half "
        "the price, results within its 24 h window); auto: batch unless the deadline is "
        "shorter than the batch window or the batch would save less than "
        "TINYSTORIES_AUTO_BATCH_MIN_SAVING_USD",
    )
    deadline_hours: float | None = Field(
        default=None, gt=0, le=24 * 365, description="when the stories are needed (auto mode)"
    )
    vocabulary: VocabularyIn | None = Field(
        default=None,
        description="your own words (`tinystories jobs submit --vocab FILE` sends a file's): "
        f"1 to {MAX_VOCABULARY_WORDS} distinct words per role; the job uses the six standard "
        "features. Absent: the packaged child vocabulary",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _valid_unicode(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_lone_surrogates(value, info.field_name or "")

    @field_validator("models")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("models must name at least one model")
        for name, weight in value.items():
            if not name or len(name) > 200 or "\x00" in name:
                raise ValueError("model names must be 1-200 characters")
            if not weight > 0 or weight > 1e6:
                raise ValueError(f"weight of {name!r} must be > 0")
        return value

    @field_validator("prices")
    @classmethod
    def _price_names(cls, value: dict[str, PriceIn] | None) -> dict[str, PriceIn] | None:
        for name in value or {}:
            if not name or len(name) > 200 or "\x00" in name:
                raise ValueError("model names must be 1-200 characters")
        return value

    @field_validator("feature_probs")
    @classmethod
    def _probs(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, prob in (value or {}).items():
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"probability of {name!r} must be in [0, 1]")
        return value


class JobUpdate(BaseModel):
    """PATCH /v1/jobs/{id} body: what can change on a job that has not ended."""

    model_config = ConfigDict(extra="forbid")

    budget_usd: float = Field(
        ge=MIN_BUDGET_USD,
        le=1_000_000,
        description="the new budget; at least what the job has spent and reserved, and "
        f"{BUDGET_RULE}. An exhausted job keeps its status: resume it to go on.",
    )


class JobOut(BaseModel):
    """A job with its progress, cost and live rates."""

    id: uuid.UUID
    name: str | None
    status: str
    n_stories: int
    completed: int
    rejected: int
    failed: int
    pending: int
    models: list[dict[str, Any]]
    prices: dict[str, dict[str, float]] | None = Field(
        default=None, description="the job's own prices (USD per 1M tokens), if any"
    )
    mode: str = Field(default="online", description="online or batch")
    mode_reason: str | None = Field(default=None, description="why auto mode chose `mode`")
    vocabulary: VocabularyOut | None = Field(
        default=None, description="the vocabulary recipes are drawn from"
    )
    batches: dict[str, Any] | None = Field(
        default=None,
        description="batch jobs: batches by state, their cost, the money saved vs online, "
        "and `members`: batches per pool member for a pooled model",
    )
    instruct: bool
    summary_model: str | None
    template_version: str
    seed: int
    priority: int
    budget_usd: float
    cost_usd: float
    reserved_usd: float
    n_requests: int
    prompt_tokens: int
    completion_tokens: int
    requests_per_minute: float
    tokens_per_minute: float
    stories_per_minute: float
    eta_seconds: float | None
    rejections_by_reason: dict[str, int] = Field(default_factory=dict)
    duplicates: int = 0
    duplicate_rate: float = 0.0
    duplicates_by_model: dict[str, dict[str, Any]] = Field(default_factory=dict)
    provider: str
    simulator: bool
    last_error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    """GET /v1/jobs body."""

    items: list[JobOut]
    provider: str
    simulator: bool


class StoryOut(BaseModel):
    """One stored story."""

    id: int
    job_id: uuid.UUID | None
    task_id: int | None
    text: str
    verb: str | None
    noun: str | None
    adjective: str | None
    features: list[str]
    model: str | None
    provider: str | None
    prompt: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float | None
    finish_reason: str | None
    accepted: bool
    rejection_reasons: list[str]
    checks: dict[str, Any] | None
    summary: str | None
    instruction: str | None
    text_hash: str
    dedup_status: str | None
    dedup_cluster_id: int | None
    source: str
    created_at: datetime

    model_config = ConfigDict(from_attributes=True)


class StoryPage(BaseModel):
    """A page of stories; pass next_cursor back as ?cursor= for the next one."""

    items: list[StoryOut]
    next_cursor: str | None


class ErrorOut(BaseModel):
    """Every error answer: a message, the field it concerns (when one does), the details."""

    error: Any = Field(description="What went wrong.")
    field: str | None = Field(default=None, description="The request field at fault, if any.")
    detail: Any = Field(default=None, description="Per-field errors or the raw detail.")
