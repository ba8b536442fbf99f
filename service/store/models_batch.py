"""Model of provider batches (Batch API jobs): one row per input file sent to the provider."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    ARRAY,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.store.models import Base, Money


class ProviderBatch(Base):
    """A batch of a job's tasks at the provider.

    Every provider call's result is stored before the next call, so any process can resume
    it: `building` (tasks leased to it, budget reserved) -> `uploaded` (input file id) ->
    `submitted` (batch id) -> `done`. `create_sent_at` is set before asking for the batch: a
    process that finds it set looks the batch up by `key` (in the batch's metadata) instead of
    creating a second one.
    """

    __tablename__ = "provider_batches"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    key: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False, unique=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, server_default="building")
    task_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)
    reserved_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    input_file_id: Mapped[str | None] = mapped_column(String(200))
    create_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The pool member that holds the batch (a batch lives where it was created); NULL: the
    # single provider.
    member: Mapped[str | None] = mapped_column(String(200))
    provider_batch_id: Mapped[str | None] = mapped_column(String(200))
    provider_status: Mapped[str | None] = mapped_column(String(32))
    completed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    stored: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    resubmitted: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    online_cost_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    next_poll_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_provider_batches_job", "job_id"),
        Index("ix_provider_batches_open", "state", postgresql_where=text("state <> 'done'")),
    )
