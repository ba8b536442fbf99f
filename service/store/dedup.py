"""Dedup index in Postgres: exact duplicates by text hash, near duplicates by MinHash LSH bands.

Every worker process, the importer and `tinystories dedup` share one index: `story_hashes`
(unique normalised-text hash), `story_bands` (band_hash, story_id) and
`story_signatures`; bands and signatures are kept for cluster roots only. One writer at a time
(:func:`lock_index`): the importer indexes each batch in the transaction that inserts it; stories
the workers store are picked up in id order (:func:`pending_stories`) by the worker that
holds the indexer's lead (INDEXER_KEY) and by `tinystories dedup`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.dataset.minhash import MinHashParams
from service.store.dedup_near import add_roots, is_empty_signature_batch, near_verdicts
from service.store.diversity import record_sketch, record_stories, reset_diversity
from service.store.diversity_sketch import Sketch
from service.store.models_diversity import NO_JOB
from service.store.signature_cache import SignatureCache

# Advisory locks (namespace, key): key -1 is the whole index, INDEXER_KEY the workers' indexer.
LOCK_NAMESPACE = 0x74534444  # "tSDD"
INDEXER_KEY = 1


class DedupParamsMismatch(RuntimeError):
    """The stored band index was built with other MinHash parameters."""


@dataclass(frozen=True)
class DedupItem:
    """A stored story to index; `signature` None skips the near-duplicate check."""

    story_id: int
    text_hash: str  # hex, as stories.text_hash
    signature: np.ndarray | None


@dataclass(frozen=True)
class DedupOutcome:
    status: str  # unique | near_duplicate | exact_duplicate
    cluster_id: int | None
    nn_jaccard: float | None = None  # estimated Jaccard to the nearest root sharing a band


def hash_bytes(text_hash: str) -> bytes:
    """A story's text hash as `story_hashes` keeps it: the sha256 hex the service writes as its
    32 bytes; any other string (a row written by other means) as its UTF-8 bytes, so it still
    matches itself and never stops the indexer (migration 0010 converts by the same rule)."""
    try:
        return bytes.fromhex(text_hash)
    except ValueError:
        return text_hash.encode()


_ENSURE_PARAMS = text(
    """
    WITH ins AS (
        INSERT INTO dedup_params (id, params) VALUES (1, CAST(:p AS jsonb))
        ON CONFLICT (id) DO NOTHING RETURNING params
    )
    SELECT params FROM ins UNION ALL SELECT params FROM dedup_params WHERE id = 1
    """
)


async def ensure_params(*, session: AsyncSession, params: MinHashParams) -> None:
    """Record the parameters on first use; DedupParamsMismatch when they changed since."""
    wanted = params.to_dict()
    stored = (await session.execute(_ENSURE_PARAMS, {"p": _json(wanted)})).scalar()
    if stored != wanted:
        raise DedupParamsMismatch(
            f"the dedup index was built with {stored}, not {wanted}; "
            "run `tinystories dedup --rebuild` to rebuild it"
        )


async def stored_params(*, session: AsyncSession) -> dict[str, Any] | None:
    """Parameters of the stored index, None before the first story is indexed."""
    return (await session.execute(text("SELECT params FROM dedup_params WHERE id = 1"))).scalar()


async def reset_index(*, session: AsyncSession, params: MinHashParams) -> None:
    """Forget the whole index and every story's status (parameters changed)."""
    await lock_index(session)
    await session.execute(text("TRUNCATE story_bands, story_hashes, story_signatures"))
    await reset_diversity(session=session)  # every story is counted again as it is re-checked
    await session.execute(
        text(
            "UPDATE stories SET dedup_status = NULL, dedup_cluster_id = NULL "
            "WHERE dedup_status IS NOT NULL"
        )
    )
    await session.execute(
        text(
            "INSERT INTO dedup_params (id, params) VALUES (1, CAST(:p AS jsonb)) "
            "ON CONFLICT (id) DO UPDATE SET params = EXCLUDED.params, updated_at = now()"
        ),
        {"p": _json(params.to_dict())},
    )


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


async def lock_index(session: AsyncSession) -> None:
    """Take the index for this transaction: its writers (the workers' indexer, imports, the
    dedup pass) run one at a time, so a story always sees every story indexed before it."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:ns, -1)"), {"ns": LOCK_NAMESPACE})


async def index_stories(
    *,
    session: AsyncSession,
    items: Sequence[DedupItem],
    params: MinHashParams,
    locked: bool = False,
    store_new: Callable[[dict[int, DedupOutcome]], Awaitable[None]] | None = None,
    sketch: Sketch | None = None,
    cache: SignatureCache | None = None,
) -> dict[int, DedupOutcome]:
    """Set dedup_status / dedup_cluster_id of stored stories and add them to the index.

    `locked`: the caller took :func:`lock_index` already (before choosing the stories).
    `store_new`: the stories are not stored yet (their ids come from the sequence): it is
    called with the outcomes to insert them with their status, before the index rows that
    reference them, so no row is written twice (an import's path).
    `sketch`: the diversity sketch of these stories, all without a job (an import's), made by
    the caller without nearest neighbours; their Jaccards are added to it here. None: the
    stories are read back and sketched here.
    `cache`: root signatures (or sketches) this process keeps across its batches (an import's,
    a worker indexer's), so the band lookup fetches only those of roots it has not met; verdicts
    are the same without it."""
    if not items:
        return {}
    if not locked:
        await lock_index(session)
    items = sorted(items, key=lambda it: it.story_id)
    await ensure_params(session=session, params=params)
    first_rows = await session.execute(
        text(
            """
            INSERT INTO story_hashes (text_hash, story_id)
            SELECT h, i FROM unnest(CAST(:hashes AS bytea[]), CAST(:ids AS bigint[])) AS u(h, i)
            ORDER BY i
            ON CONFLICT (text_hash) DO NOTHING
            RETURNING story_id
            """
        ),
        {
            "hashes": [hash_bytes(it.text_hash) for it in items],
            "ids": [it.story_id for it in items],
        },
    )
    new_firsts = {row[0] for row in first_rows}
    firsts = set(new_firsts)
    # A story indexed before (e.g. by an import) owns its hash already: still the first, and
    # already in the band index if it is a root. New stories (store_new) cannot: no scan of
    # story_hashes by story id (it has no index on it) for them.
    if len(firsts) < len(items) and store_new is None:
        owners = await session.execute(
            text("SELECT story_id FROM story_hashes WHERE story_id = ANY(CAST(:ids AS bigint[]))"),
            {"ids": [it.story_id for it in items if it.story_id not in firsts]},
        )
        firsts |= {row[0] for row in owners}
    exact = [it for it in items if it.story_id not in firsts]

    outcomes: dict[int, DedupOutcome] = {
        it.story_id: DedupOutcome("unique", None) for it in items if it.story_id in firsts
    }
    near = [it for it in items if it.story_id in new_firsts and it.signature is not None]
    root_rows = np.empty(0, dtype=np.int64)
    if near:
        sigs = np.stack([it.signature for it in near])  # type: ignore[misc]
        signed = ~is_empty_signature_batch(sigs)  # a text too short for one shingle: no check
        near, sigs = [it for it, ok in zip(near, signed.tolist(), strict=True) if ok], sigs[signed]
    if near:
        root_rows = await _near_duplicates(session, near, sigs, params, outcomes, cache)

    if exact:
        rows = await session.execute(
            text(
                "SELECT h.text_hash, h.story_id, s.dedup_cluster_id FROM story_hashes h "
                "LEFT JOIN stories s ON s.id = h.story_id "
                "WHERE h.text_hash = ANY(CAST(:hashes AS bytea[]))"
            ),
            {"hashes": sorted({hash_bytes(it.text_hash) for it in exact})},
        )
        first_of = {}
        for h, first_id, cluster in rows:
            known = outcomes.get(first_id)
            if known is not None:
                cluster = known.cluster_id
            first_of[h] = cluster if cluster is not None else first_id
        for it in exact:
            first = first_of[hash_bytes(it.text_hash)]
            outcomes[it.story_id] = DedupOutcome("exact_duplicate", first, 1.0)
    if store_new is not None:
        await store_new(outcomes)
    else:
        ids = list(outcomes)
        await session.execute(
            text(
                """
                UPDATE stories s SET dedup_status = u.status, dedup_cluster_id = u.cluster,
                    nn_jaccard = u.nn
                FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]),
                            CAST(:clusters AS bigint[]), CAST(:nn AS float8[]))
                    AS u(id, status, cluster, nn)
                WHERE s.id = u.id
                """
            ),
            {
                "ids": ids,
                "statuses": [outcomes[i].status for i in ids],
                "clusters": [outcomes[i].cluster_id for i in ids],
                "nn": [outcomes[i].nn_jaccard for i in ids],
            },
        )
    if len(root_rows):
        ids = np.asarray([near[i].story_id for i in root_rows.tolist()], dtype=np.int64)
        await add_roots(session, ids, sigs[root_rows], params, cache)
    if sketch is None:
        nearest = {i: o.nn_jaccard for i, o in outcomes.items()}
        await record_stories(session=session, nearest=nearest)
    else:
        sketch.add_nearest(o.nn_jaccard for o in outcomes.values())
        await record_sketch(session=session, scope=NO_JOB, sketch=sketch)
    return outcomes


async def _near_duplicates(
    session: AsyncSession,
    items: list[DedupItem],
    sigs: np.ndarray,
    params: MinHashParams,
    outcomes: dict[int, DedupOutcome],
    cache: SignatureCache | None,
) -> np.ndarray:
    """Indexes of the new roots among `items` (their outcomes set; `sigs` their signatures).

    Only cluster roots are indexed: a new story is compared with the earliest story of each
    cluster, so a cluster of any size costs one candidate, and chains cannot drift away from it.
    """
    ids = np.asarray([it.story_id for it in items], dtype=np.int64)
    verdicts = await near_verdicts(session, ids, sigs, params, cache)
    for it, cluster, nearest in zip(items, verdicts.clusters, verdicts.nearest, strict=True):
        outcomes[it.story_id] = DedupOutcome(
            "unique" if cluster is None else "near_duplicate", cluster, nearest
        )
    return verdicts.roots


async def pending_stories(
    *, session: AsyncSession, limit: int
) -> list[tuple[int, str, str, uuid.UUID | None, str | None]]:
    """(id, text, text hash, job id, model) of accepted stories not checked yet, oldest first."""
    rows = await session.execute(
        text(
            "SELECT id, text, text_hash, job_id, model FROM stories "
            "WHERE dedup_status IS NULL AND accepted ORDER BY id LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def count_undeduped(*, session: AsyncSession, cap: int | None = None) -> int:
    """Accepted stories not checked yet (counting stops at `cap`: a cheap backlog probe)."""
    limit = "" if cap is None else "LIMIT :cap"
    return int(
        (
            await session.execute(
                text(
                    "SELECT count(*) FROM (SELECT 1 FROM stories "
                    f"WHERE dedup_status IS NULL AND accepted {limit}) AS pending"
                ),
                {"cap": cap},
            )
        ).scalar_one()
    )


async def duplicate_stats(
    *, session: AsyncSession, job_id: uuid.UUID | None = None
) -> list[dict[str, Any]]:
    """Per job and model: stories checked, exact and near duplicates, duplicate rate."""
    rows = await session.execute(
        text(
            """
            SELECT job_id, model,
                   count(*) FILTER (WHERE dedup_status IS NOT NULL) AS checked,
                   count(*) FILTER (WHERE dedup_status = 'exact_duplicate') AS exact,
                   count(*) FILTER (WHERE dedup_status = 'near_duplicate') AS near
            FROM stories
            WHERE CAST(:job_id AS uuid) IS NULL OR job_id = CAST(:job_id AS uuid)
            GROUP BY job_id, model
            ORDER BY job_id NULLS LAST, model
            """
        ),
        {"job_id": job_id},
    )
    out = []
    for jid, model, checked, exact, near in rows:
        dups = exact + near
        out.append(
            {
                "job_id": str(jid) if jid is not None else None,
                "model": model,
                "checked": checked,
                "exact_duplicates": exact,
                "near_duplicates": near,
                "duplicates": dups,
                "duplicate_rate": round(dups / checked, 6) if checked else 0.0,
            }
        )
    return out
