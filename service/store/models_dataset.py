"""Models of the dataset-quality tables: dedup index, imports, exports (same Base as models)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.store.models import Base

DEDUP_STATUSES = ("unique", "near_duplicate", "exact_duplicate")
EXPORT_STATUSES = ("queued", "running", "completed", "failed")


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class StoryHash(Base):
    """First story of each normalised-text hash: the unique index exact dedup relies on."""

    __tablename__ = "story_hashes"

    text_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)  # raw sha256
    story_id: Mapped[int] = mapped_column(BigInteger, nullable=False)


class StoryBand(Base):
    """One LSH band key of one cluster root; every worker process shares this index.

    band_keys() mixes the band number into each key, so the key alone says which band it is.
    The btree holds both columns: a batch's lookup (its keys sorted, `= ANY`) is one index-only
    scan that visits no heap page (store.dedup_near). No primary key: each root's keys are
    inserted once, by the one indexing transaction that makes it a root.
    """

    __tablename__ = "story_bands"
    __table_args__ = (Index("ix_story_bands_band_hash_story_id", "band_hash", "story_id"),)
    # The ORM needs an identity; the table has no key constraint (see above).
    __mapper_args__: ClassVar[dict[str, Any]] = {"primary_key": ["band_hash", "story_id"]}

    band_hash: Mapped[int] = mapped_column(BigInteger, nullable=False)
    story_id: Mapped[int] = mapped_column(BigInteger, nullable=False)


class StorySignature(Base):
    """MinHash signature of an indexed story (kept apart from stories: wide, rarely read)."""

    __tablename__ = "story_signatures"

    story_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True
    )
    minhash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class DedupParams(Base):
    """The MinHash/LSH parameters the stored index was built with (one row, id 1)."""

    __tablename__ = "dedup_params"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    updated_at: Mapped[datetime] = _now()


class ImportRow(Base):
    """One imported file: identity (path, size, hash of its first MiB) and committed position."""

    __tablename__ = "imports"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    head_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    format: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="running")
    next_record: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    next_offset: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    inserted: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    duplicates: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    # sha256 of bytes [0, next_offset) when the import failed: a fixed file that keeps them
    # resumes at next_record (its size and first MiB may have changed with the fix).
    kept_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (UniqueConstraint("path", "size", "head_sha256", name="uq_imports_file"),)


class ExportRow(Base):
    """A requested export: its options, progress and where the directory was written."""

    __tablename__ = "exports"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="queued")
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    rows_done: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    rows_total: Mapped[int | None] = mapped_column(BigInteger)
    progress: Mapped[float] = mapped_column(Float, nullable=False, server_default="0")
    path: Mapped[str | None] = mapped_column(Text)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_exports_created_at", "created_at"),)
