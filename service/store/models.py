"""SQLAlchemy models: the one source of truth alembic checks the migrations against."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy import text as sql_text  # Story has a `text` column
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Money = Numeric(18, 9)

# Upper bounds (seconds) of the latency histogram columns of rollups_minute; the last is +inf.
LATENCY_BUCKETS_S: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
LATENCY_COLUMNS: tuple[str, ...] = (
    "lat_le_250ms",
    "lat_le_500ms",
    "lat_le_1s",
    "lat_le_2s",
    "lat_le_5s",
    "lat_le_10s",
    "lat_le_30s",
    "lat_gt_30s",
)

JOB_STATUSES = (
    "queued",
    "running",
    "paused",
    "completed",
    "cancelled",
    "failed",
    "budget_exhausted",
)
# held: the task of a job whose budget ran out, waiting for more budget (not runnable).
TASK_STATUSES = ("pending", "running", "done", "failed", "cancelled", "held")


class Base(DeclarativeBase):
    """Declarative base of the service schema."""

    type_annotation_map: ClassVar = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Job(Base):
    """One generation request: how many stories, from which models, with what budget."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    n_stories: Mapped[int] = mapped_column(Integer, nullable=False)
    # [{"model": "gpt-4", "weight": 0.5}, ...]; one entry when a single model is asked for.
    models: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    template_version: Mapped[str] = mapped_column(String(64), nullable=False)
    feature_probs: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    instruct: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    summary_model: Mapped[str | None] = mapped_column(String(200))
    max_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    seed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    budget_usd: Mapped[Decimal] = mapped_column(Money, nullable=False)
    reserved_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    spent_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    priority: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    status: Mapped[str] = mapped_column(String(32), nullable=False, server_default="queued")
    provider: Mapped[str] = mapped_column(String(64), nullable=False)
    completed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rejected: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    n_requests: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    # Tasks 0 .. tasks_made - 1 exist; claims make the rest in chunks as they need them, so a
    # job of any size is one row when submitted.
    tasks_made: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # {"model": {"input": usd_per_million, "output": usd_per_million}}: the job's own prices,
    # over the price table (a local model at 0, a negotiated rate).
    prices: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    mode: Mapped[str] = mapped_column(String(16), nullable=False, server_default="online")
    mode_reason: Mapped[str | None] = mapped_column(Text)
    # A custom vocabulary: {"name", "sha256", "noun", "verb", "adjective"} (word counts); its
    # words are in `vocabularies` under the sha256. NULL: the packaged default vocabulary.
    vocabulary: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_jobs_status_priority", "status", "priority"),)


class VocabularyWords(Base):
    """The words of a custom vocabulary, stored once by content hash for every job using it:
    claims re-derive recipes from (seed, index) and these words."""

    __tablename__ = "vocabularies"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    # {"noun": [...], "verb": [...], "adjective": [...]}
    words: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _now()


class Task(Base):
    """One story to make; the unit a worker claims under a lease."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    index: Mapped[int] = mapped_column(Integer, nullable=False)
    # NULL until claimed: the claim that makes a task derives both from (job seed, index).
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    model: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Budget reserved by the current attempt; the reaper hands it back if the worker dies.
    reserved_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        UniqueConstraint("job_id", "index", name="uq_tasks_job_index"),
        Index("ix_tasks_pending", "job_id", "id", postgresql_where=text("status = 'pending'")),
        Index(
            "ix_tasks_running_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'running'"),
        ),
    )


class Story(Base):
    """A generated (or imported) story with its recipe, checks and provenance."""

    __tablename__ = "stories"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("tasks.id", ondelete="SET NULL"), unique=True
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    text: Mapped[str] = mapped_column(Text, nullable=False)
    verb: Mapped[str | None] = mapped_column(String(100))
    noun: Mapped[str | None] = mapped_column(String(100))
    adjective: Mapped[str | None] = mapped_column(String(100))
    features: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default="[]")
    prompt: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    latency_s: Mapped[float | None] = mapped_column(Float)
    finish_reason: Mapped[str | None] = mapped_column(String(64))
    checks: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    accepted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    rejection_reasons: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default="[]")
    summary: Mapped[str | None] = mapped_column(Text)
    instruction: Mapped[str | None] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64), nullable=False)  # looked up in story_hashes
    dedup_status: Mapped[str | None] = mapped_column(String(32))
    dedup_cluster_id: Mapped[int | None] = mapped_column(BigInteger)
    nn_jaccard: Mapped[float | None] = mapped_column(Float)  # to the nearest earlier cluster root
    source: Mapped[str] = mapped_column(String(64), nullable=False, server_default="generated")
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        Index("ix_stories_job_id_id", "job_id", "id"),
        # The dedup indexer's queue: accepted stories not yet checked (small, ordered by id).
        Index(
            "ix_stories_undeduped",
            "id",
            postgresql_where=sql_text("dedup_status IS NULL AND accepted"),
        ),
    )


class RequestRow(Base):
    """One provider call, failed ones included."""

    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    task_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    provider: Mapped[str] = mapped_column(String(64), nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    error_class: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    latency_s: Mapped[float] = mapped_column(Float, nullable=False, server_default="0")
    finish_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _now()

    __table_args__ = (Index("ix_requests_job_id", "job_id"),)


class RollupMinute(Base):
    """Per minute, model and job: what the dashboard and rate figures read."""

    __tablename__ = "rollups_minute"

    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    errors: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rate_limited: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    retries: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    errors_by_class: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default="{}"
    )
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    stories_accepted: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    stories_rejected: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    tasks_failed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Accepted stories found to be exact or near duplicates on arrival (exact ones included).
    duplicates: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    exact_duplicates: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rejections_by_reason: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default="{}"
    )
    latency_sum_s: Mapped[float] = mapped_column(Float, nullable=False, server_default="0")
    lat_le_250ms: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lat_le_500ms: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lat_le_1s: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lat_le_2s: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lat_le_5s: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lat_le_10s: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lat_le_30s: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lat_gt_30s: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")

    __table_args__ = (Index("ix_rollups_minute_job", "job_id", "minute"),)


class WorkerRow(Base):
    """A live (or recently seen) worker process."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    concurrency: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="running")
    in_flight: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    started_at: Mapped[datetime] = _now()
    heartbeat_at: Mapped[datetime] = _now()
    # The worker's provider pools as it sees them (generator.pool snapshot; no keys).
    providers: Mapped[list[Any] | None] = mapped_column(JSONB)


class RateBucket(Base):
    """Shared token bucket of one model: every process draws from this row."""

    __tablename__ = "rate_buckets"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(BigInteger)
    req_avail: Mapped[float] = mapped_column(Float, nullable=False, server_default="0")
    tok_avail: Mapped[float] = mapped_column(Float, nullable=False, server_default="0")
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _now()
