"""Models of the diversity tables and of the story browser's indexes (same Base as models).

Diversity figures are kept as running sums, one row set per scope: a job's id, NO_JOB for
stories without one (imports) and ALL_STORIES for everything. The dedup index writer updates
them under its lock (store.dedup.lock_index), so every row has one writer at a time and a
read never scans stories.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.store.models import Base, Story

NO_JOB = uuid.UUID(int=0)
ALL_STORIES = uuid.UUID(int=2**128 - 1)


class DiversityStats(Base):
    """Running diversity sums of one scope: counts, n-gram sketches, histograms."""

    __tablename__ = "diversity_stats"

    scope: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    stories: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    words: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    # n-grams seen (n = 1, 2, 3) and HyperLogLog registers of the distinct ones.
    ngrams: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)
    hll_1: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    hll_2: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    hll_3: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    length_hist: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)
    vocab_hist: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)
    nn_hist: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)
    # {"Dialogue": 12, ...} and "" for stories with no feature.
    features: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class DiversityTerm(Base):
    """How often one recipe word or opening 5-gram occurs in a scope's stories."""

    __tablename__ = "diversity_terms"

    scope: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # verb|noun|adjective|opening
    term: Mapped[str] = mapped_column(Text, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (Index("ix_diversity_terms_top", "scope", "kind", "count"),)


# The story browser's filters: keyset pages walk (filter, id) in id order. Rejected stories and
# duplicates are a small share, so their indexes are partial.
Index("ix_stories_verb_id", Story.verb, Story.id)
Index("ix_stories_noun_id", Story.noun, Story.id)
Index("ix_stories_adjective_id", Story.adjective, Story.id)
Index("ix_stories_rejected_id", Story.id, postgresql_where=text("NOT accepted"))
Index(
    "ix_stories_duplicate_id",
    Story.dedup_status,
    Story.id,
    postgresql_where=text("dedup_status IN ('near_duplicate', 'exact_duplicate')"),
)
Index(
    "ix_stories_cluster",
    Story.dedup_cluster_id,
    Story.id,
    postgresql_where=text("dedup_cluster_id IS NOT NULL"),
)
