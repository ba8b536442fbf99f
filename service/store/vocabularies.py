"""Custom vocabularies of jobs: words stored once by content hash, read back by claims.

A job names its vocabulary by sha256 (jobs.vocabulary); recipes are re-derived from (seed,
index) and these words whenever a claim makes a task, so a process keeps the few it is
using built (the words of one vocabulary are read once per process, not once per claim).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from cachetools import LRUCache
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from vocab import Vocabulary, vocabulary_from_words

# Vocabularies one process keeps built: a worker serves a handful of jobs at a time.
CACHE_SIZE = 32
_built: LRUCache[str, Vocabulary] = LRUCache(maxsize=CACHE_SIZE)


class VocabularyMissing(LookupError):
    """A job names a vocabulary whose words are not stored (never written with the job)."""


async def save_vocabulary(*, session: AsyncSession, vocabulary: Vocabulary) -> dict[str, Any]:
    """Store the words (once per content hash) and return the job's `vocabulary` value:
    name, sha256 and the number of words of each role."""
    words = vocabulary.words_by_role()
    await session.execute(
        text(
            "INSERT INTO vocabularies (sha256, words) VALUES (:sha, CAST(:words AS jsonb)) "
            "ON CONFLICT (sha256) DO NOTHING"
        ),
        {"sha": vocabulary.sha256, "words": json.dumps(words, ensure_ascii=False)},
    )
    _built[vocabulary.sha256] = vocabulary
    return vocabulary.identity()


async def vocabularies_by_sha(
    *, session: AsyncSession, shas: Iterable[str | None]
) -> dict[str, Vocabulary]:
    """The vocabularies with these content hashes (None is skipped): built ones from this
    process's cache, the rest in one query. VocabularyMissing for one not stored."""
    wanted = {sha for sha in shas if sha}
    found = {sha: _built[sha] for sha in wanted if sha in _built}
    missing = sorted(wanted - set(found))
    if missing:
        rows = await session.execute(
            text("SELECT sha256, words FROM vocabularies WHERE sha256 = ANY(:shas)"),
            {"shas": missing},
        )
        for sha, words in rows:
            found[sha] = vocabulary_from_words(words, name=f"sha256:{sha[:12]}")
            _built[sha] = found[sha]
    lost = sorted(wanted - set(found))
    if lost:
        raise VocabularyMissing(f"no stored words for vocabulary sha256 {', '.join(lost)}")
    return found


async def job_vocabulary(*, session: AsyncSession, job_id: uuid.UUID) -> Vocabulary | None:
    """A job's custom vocabulary, or None when it uses the packaged default."""
    sha = (
        await session.execute(
            text("SELECT vocabulary ->> 'sha256' FROM jobs WHERE id = :id"), {"id": job_id}
        )
    ).scalar()
    if not sha:
        return None
    return (await vocabularies_by_sha(session=session, shas=[sha]))[sha]
