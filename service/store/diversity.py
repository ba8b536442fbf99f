"""Diversity figures kept as they are written: one sketch per job and one for all stories.

`record_stories` runs in the transaction that gives stories their dedup status (under the
dedup index lock, so each row has one writer): it reads the batch's stories by id, sketches
them (store.diversity_sketch) and adds the sketch to the job's rows and to the overall rows.
Reads cost the same at a thousand stories or millions: one stats row and an index walk over
the terms. Why HyperLogLog for distinct-n: exact distinct 3-grams of a million stories are
about 100 million rows; 2**14 registers per n give +-1% in 16 KiB and merge by max.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.diversity_sketch import (
    LENGTH_EDGES,
    NGRAM_ORDERS,
    NN_EDGES,
    OOV_EDGES,
    TERM_KINDS,
    Sketch,
    StoryFacts,
)
from service.store.models_diversity import ALL_STORIES, NO_JOB

_STORY_FACTS = text(
    """
    SELECT id, job_id, text, verb, noun, adjective, features,
           CAST(checks -> 'details' ->> 'oov_share' AS double precision)
    FROM stories WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id
    """
)

_STATS_COLUMNS = "stories, words, ngrams, hll_1, hll_2, hll_3, length_hist, vocab_hist, nn_hist"

_UPSERT_STATS = text(
    f"""
    INSERT INTO diversity_stats (scope, {_STATS_COLUMNS}, features, updated_at)
    VALUES (:scope, :stories, :words, :ngrams, :hll_1, :hll_2, :hll_3, :length_hist,
            :vocab_hist, :nn_hist, CAST(:features AS jsonb), now())
    ON CONFLICT (scope) DO UPDATE SET
        stories = EXCLUDED.stories, words = EXCLUDED.words, ngrams = EXCLUDED.ngrams,
        hll_1 = EXCLUDED.hll_1, hll_2 = EXCLUDED.hll_2, hll_3 = EXCLUDED.hll_3,
        length_hist = EXCLUDED.length_hist, vocab_hist = EXCLUDED.vocab_hist,
        nn_hist = EXCLUDED.nn_hist, features = EXCLUDED.features, updated_at = now()
    """
)

_ADD_TERMS = text(
    """
    INSERT INTO diversity_terms (scope, kind, term, count)
    SELECT * FROM unnest(CAST(:scopes AS uuid[]), CAST(:kinds AS text[]),
                         CAST(:terms AS text[]), CAST(:counts AS bigint[]))
    ORDER BY 1, 2, 3
    ON CONFLICT (scope, kind, term) DO UPDATE SET count = diversity_terms.count + EXCLUDED.count
    """
)


def _fit(values: Sequence[int] | None, size: int) -> list[int]:
    """A stored histogram as a list of `size` buckets (edges added later start at 0)."""
    out = [int(v) for v in (values or [])][:size]
    return out + [0] * (size - len(out))


def _sketch_of(row: Any) -> Sketch:
    stories, words, ngrams, h1, h2, h3, length, vocab, nn, features = row
    sketch = Sketch(stories=int(stories), words=int(words))
    sketch.ngrams = _fit(ngrams, len(NGRAM_ORDERS))
    sketch.hll = np.stack([np.frombuffer(h, dtype=np.uint8).copy() for h in (h1, h2, h3)])
    sketch.length_hist = _fit(length, len(LENGTH_EDGES))
    sketch.vocab_hist = _fit(vocab, len(OOV_EDGES))
    sketch.nn_hist = _fit(nn, len(NN_EDGES))
    sketch.features.update({k: int(v) for k, v in (features or {}).items()})
    return sketch


async def read_sketch(*, session: AsyncSession, scope: uuid.UUID) -> Sketch | None:
    """The stored sums of one scope (without its terms), None before its first story."""
    row = (
        await session.execute(
            text(f"SELECT {_STATS_COLUMNS}, features FROM diversity_stats WHERE scope = :s"),
            {"s": scope},
        )
    ).first()
    return None if row is None else _sketch_of(row)


async def record_stories(*, session: AsyncSession, nearest: Mapping[int, float | None]) -> int:
    """Add stored stories (id -> nearest-neighbour Jaccard, None: not compared) to their job's
    and the overall diversity sums; returns how many were counted. Caller holds the index lock.
    """
    if not nearest:
        return 0
    rows = (await session.execute(_STORY_FACTS, {"ids": sorted(nearest)})).all()
    by_scope: dict[uuid.UUID, list[StoryFacts]] = {}
    for sid, job_id, body, verb, noun, adjective, features, oov in rows:
        facts = StoryFacts(body, verb, noun, adjective, features or (), oov, nearest.get(sid))
        by_scope.setdefault(job_id or NO_JOB, []).append(facts)
    batch = {scope: Sketch().add_stories(facts) for scope, facts in by_scope.items()}
    overall = Sketch()
    for sketch in batch.values():
        overall.add(sketch)
    batch[ALL_STORIES] = overall
    await _add_sketches(session, batch)
    return len(rows)


async def record_sketch(*, session: AsyncSession, scope: uuid.UUID, sketch: Sketch) -> None:
    """Add the sketch of a batch of stories of one scope (made by the caller, e.g. an import
    while it reads) to that scope's and the overall sums. Caller holds the index lock."""
    await _add_sketches(session, {scope: sketch, ALL_STORIES: Sketch().add(sketch)})


async def _add_sketches(session: AsyncSession, batch: dict[uuid.UUID, Sketch]) -> None:
    scopes = sorted(batch)
    stored = await session.execute(
        text(
            f"SELECT scope, {_STATS_COLUMNS}, features FROM diversity_stats "
            "WHERE scope = ANY(CAST(:scopes AS uuid[])) ORDER BY scope FOR UPDATE"
        ),
        {"scopes": scopes},
    )
    totals = {row[0]: _sketch_of(row[1:]) for row in stored}
    for scope in scopes:
        total = totals.get(scope, Sketch()).add(batch[scope])
        await session.execute(
            _UPSERT_STATS,
            {
                "scope": scope,
                "stories": total.stories,
                "words": total.words,
                "ngrams": total.ngrams,
                "hll_1": total.hll[0].tobytes(),
                "hll_2": total.hll[1].tobytes(),
                "hll_3": total.hll[2].tobytes(),
                "length_hist": total.length_hist,
                "vocab_hist": total.vocab_hist,
                "nn_hist": total.nn_hist,
                "features": json.dumps(dict(sorted(total.features.items()))),
            },
        )
    terms = [(s, k, t, c) for s in scopes for (k, t), c in sorted(batch[s].terms.items())]
    if terms:
        scopes_, kinds, words, counts = zip(*terms, strict=True)
        await session.execute(
            _ADD_TERMS,
            {"scopes": list(scopes_), "kinds": list(kinds), "terms": list(words),
             "counts": list(counts)},
        )  # fmt: skip


async def reset_diversity(*, session: AsyncSession) -> None:
    """Forget every sum (the dedup index is rebuilt: every story will be counted again)."""
    await session.execute(text("TRUNCATE diversity_stats, diversity_terms"))


async def top_terms(
    *, session: AsyncSession, scope: uuid.UUID, kind: str, limit: int, least: bool = False
) -> list[tuple[str, int]]:
    """The most (or least) frequent terms of one kind in a scope (index walk, no sort)."""
    order = "ASC" if least else "DESC"
    rows = await session.execute(
        text(
            "SELECT term, count FROM diversity_terms WHERE scope = :s AND kind = :k "
            f"ORDER BY count {order}, term LIMIT :n"
        ),
        {"s": scope, "k": kind, "n": limit},
    )
    return [(term, int(count)) for term, count in rows]


async def term_counts(*, session: AsyncSession, scope: uuid.UUID) -> dict[str, int]:
    """Distinct terms per kind in a scope (recipe words used, distinct openings)."""
    rows = await session.execute(
        text("SELECT kind, count(*) FROM diversity_terms WHERE scope = :s GROUP BY kind"),
        {"s": scope},
    )
    found = {kind: int(n) for kind, n in rows}
    return {kind: found.get(kind, 0) for kind in TERM_KINDS}


async def used_words(*, session: AsyncSession, scope: uuid.UUID, kind: str) -> set[str]:
    """Every recipe word of one role used in a scope (at most the vocabulary's size)."""
    rows = await session.execute(
        text("SELECT term FROM diversity_terms WHERE scope = :s AND kind = :k"),
        {"s": scope, "k": kind},
    )
    return {term for (term,) in rows}


async def job_configuration(
    *, session: AsyncSession, job_id: uuid.UUID | None
) -> list[tuple[dict[str, Any] | None, int]]:
    """(feature_probs, stories checked so far) of one job, or of every job for the overall
    figures: what the configured feature mix is weighted by."""
    rows = await session.execute(
        text(
            "SELECT j.feature_probs, COALESCE(d.stories, 0) FROM jobs j "
            "LEFT JOIN diversity_stats d ON d.scope = j.id "
            "WHERE CAST(:job AS uuid) IS NULL OR j.id = CAST(:job AS uuid)"
        ),
        {"job": job_id},
    )
    return [(probs, int(n)) for probs, n in rows]
