"""The root-signature cache of the band lookup: same verdicts at any cap, entries trusted."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sqlalchemy import text

from service.dataset.dedup import signatures
from service.dataset.minhash import MinHashParams, text_hash
from service.store import dedup as dedup_store
from service.store.imports import insert_stories
from service.store.signature_cache import SignatureCache


def test_rows_signatures_and_cap() -> None:
    # Room for five signatures of 4 slots (4 bytes each, plus a 1-byte sketch per slot).
    cache = SignatureCache(4, max_bytes=5 * 20)
    assert cache.capacity == 5 and len(cache) == 0
    assert cache.rows_of(np.array([3, 9])).tolist() == [-1, -1]
    sigs = np.arange(12, dtype=np.uint32).reshape(3, 4)
    cache.add(np.array([30, 10, 20]), sigs)
    cache.add(np.array([50, 40, 60]), sigs + 100)  # only two of these fit
    assert len(cache) == 5
    rows = cache.rows_of(np.array([10, 20, 30, 40, 50, 60, 5, 99]))
    assert (rows[-3:] == -1).all()
    got = cache.signatures(rows[:5])
    assert got.tolist() == [sigs[1].tolist(), sigs[2].tolist(), sigs[0].tolist(),
                            (sigs[1] + 100).tolist(), (sigs[0] + 100).tolist()]  # fmt: skip
    assert (cache.sketches(rows[:5]) == got.astype(np.uint8)).all()
    sketch_only = SignatureCache(4, max_bytes=5 * 4, full=False)  # 1 byte per slot: five
    sketch_only.add(np.array([30, 10, 20, 50, 40, 60]), np.concatenate([sigs, sigs + 100]))
    assert sketch_only.capacity == 5 and len(sketch_only) == 5
    assert sketch_only.sketches(sketch_only.rows_of(np.array([10]))).tolist() == [[4, 5, 6, 7]]
    with pytest.raises(ValueError, match="sketches only"):
        sketch_only.signatures(np.array([0]))
    with pytest.raises(ValueError, match="max_bytes"):
        SignatureCache(4, max_bytes=-1)


def test_empty_signatures_found_row_by_row() -> None:
    from service.dataset.minhash import is_empty_signature
    from service.store.dedup_near import is_empty_signature_batch

    sigs = signatures(["", "a dog ran", "Once upon a time, a cat sat."], MinHashParams())
    sigs[2, :5] = np.iinfo(np.uint32).max  # some slots at the maximum: still a signature
    assert is_empty_signature_batch(sigs).tolist() == [is_empty_signature(s) for s in sigs]
    assert is_empty_signature_batch(sigs).tolist() == [True, False, False]


def formulaic_stories(n: int) -> list[str]:
    """Simulator-grammar stories (formulaic: some share a band by chance)."""
    from generator.simulator.grammar import StoryRequest, write_story
    from vocab import RecipeSampler

    sampler, out = RecipeSampler(), []
    for i in range(n):
        r = sampler.recipe(3, i)
        req = StoryRequest(r.verb, r.noun, r.adjective, tuple(r.features))
        out.append(write_story(req, random.Random(1_000 + i)))
    return out


def mixed_stories() -> list[str]:
    """300 stories, then 300 made of the sentences of two of the first ten (the start of one,
    the end of the other): each meets one or two roots, at Jaccards from ~0.1 to ~0.9, so some
    are near duplicates and others unique with a nearest neighbour; with a cache capped at
    seven signatures, some of those roots are cached and some are not."""
    base, rng = formulaic_stories(300), random.Random(5)
    derived = []
    for _ in range(300):
        a, b = (base[i].split(". ") for i in rng.sample(range(10), 2))
        cut_a, cut_b = rng.randrange(1, len(a)), rng.randrange(1, len(b))
        derived.append(". ".join(a[:cut_a] + b[cut_b:]))
    return base + derived


async def _index_all(sessionmaker, ids, stories, sigs, cache, batch: int) -> dict:
    """Forget the index, then check the stored stories batch by batch: their verdicts."""
    params = MinHashParams()
    async with sessionmaker() as session, session.begin():
        await dedup_store.reset_index(session=session, params=params)
    out = {}
    for lo in range(0, len(ids), batch):
        items = [
            dedup_store.DedupItem(i, text_hash(s), sig)
            for i, s, sig in zip(ids[lo : lo + batch], stories[lo : lo + batch],
                                 sigs[lo : lo + batch], strict=True)
        ]  # fmt: skip
        async with sessionmaker() as session, session.begin():
            got = await dedup_store.index_stories(
                session=session, items=items, params=params, cache=cache
            )
        out.update({i: (o.status, o.cluster_id, o.nn_jaccard) for i, o in got.items()})
    return out


async def test_verdicts_with_a_tiny_cache_equal_verdicts_without(sessionmaker) -> None:
    stories = mixed_stories()
    sigs = signatures(stories, MinHashParams())
    rows = [{"text": s, "accepted": True, "text_hash": text_hash(s), "model": "m"} for s in stories]
    async with sessionmaker() as session, session.begin():
        ids = await insert_stories(session=session, stories=rows)

    without = await _index_all(sessionmaker, ids, stories, sigs, None, batch=50)
    tiny = SignatureCache(128, max_bytes=7 * 640)
    with_tiny = await _index_all(sessionmaker, ids, stories, sigs, tiny, batch=50)
    large = SignatureCache(128)
    with_large = await _index_all(sessionmaker, ids, stories, sigs, large, batch=50)
    # Indexed again, the large cache holds every root already.
    again = await _index_all(sessionmaker, ids, stories, sigs, large, batch=120)
    # Sketches only (a worker's indexer): the pairs compared in full are fetched by id.
    sketch_only = SignatureCache(128, full=False)
    with_sketches = await _index_all(sessionmaker, ids, stories, sigs, sketch_only, batch=50)
    again_sketches = await _index_all(sessionmaker, ids, stories, sigs, sketch_only, batch=50)

    statuses = [v[0] for v in without.values()]
    assert statuses.count("near_duplicate") >= 100
    # Stories that meet roots they do not duplicate: their nearest Jaccard comes from them.
    assert sum(0 < v[2] < 0.3 for v in without.values() if v[0] == "unique") >= 10
    assert len(tiny) == 7
    assert len(large) == statuses.count("unique")
    assert with_tiny == without
    assert with_large == without
    assert with_sketches == without and again_sketches == without
    assert len(sketch_only) == statuses.count("unique")
    assert again == await _index_all(sessionmaker, ids, stories, sigs, None, batch=120)
    async with sessionmaker() as session:
        indexed = await session.execute(text("SELECT count(*) FROM story_signatures"))
    assert indexed.scalar_one() == statuses.count("unique")


async def test_a_cached_signature_is_used_without_fetching(sessionmaker) -> None:
    """The lookup trusts the cache for the roots it holds (a story's signature never changes
    under its id), so a root it holds is verified against the cached values."""
    stories = formulaic_stories(1)
    near = stories[0].rsplit(". ", 1)[0]
    params = MinHashParams()
    sigs = signatures([stories[0], near], params)
    rows = [{"text": s, "accepted": True, "text_hash": text_hash(s), "model": "m"}
            for s in (stories[0], near)]  # fmt: skip
    async with sessionmaker() as session, session.begin():
        root, copy = await insert_stories(session=session, stories=rows)
    first = await _index_all(sessionmaker, [root, copy], [stories[0], near], sigs, None, 2)
    assert first[copy][:2] == ("near_duplicate", root)
    wrong = SignatureCache(128)
    wrong.add(np.array([root]), np.zeros((1, 128), dtype=np.uint32))
    async with sessionmaker() as session, session.begin():
        await dedup_store.reset_index(session=session, params=params)
        await dedup_store.index_stories(
            session=session, items=[dedup_store.DedupItem(root, text_hash(stories[0]), sigs[0])],
            params=params,
        )  # fmt: skip
    async with sessionmaker() as session, session.begin():
        (out,) = (
            await dedup_store.index_stories(
                session=session,
                items=[dedup_store.DedupItem(copy, text_hash(near), sigs[1])],
                params=params,
                cache=wrong,
            )
        ).values()
    assert (out.status, out.cluster_id, out.nn_jaccard) == ("unique", None, 0.0)


@pytest.mark.parametrize("cache_bytes", [None, 0, "sketches"])
async def test_band_rows_of_a_deleted_root_are_no_candidate(sessionmaker, cache_bytes) -> None:
    """Deleting a story drops its signature (foreign key) but not its band rows: a root whose
    signature is fetched and missing is ignored, as a join of the two tables did."""
    story = formulaic_stories(1)[0]
    near = story.rsplit(". ", 1)[0]
    params = MinHashParams()
    sigs = signatures([story, near], params)
    rows = [{"text": s, "accepted": True, "text_hash": text_hash(s), "model": "m"}
            for s in (story, near)]  # fmt: skip
    async with sessionmaker() as session, session.begin():
        root, copy = await insert_stories(session=session, stories=rows)
    if cache_bytes == "sketches":  # holds the root's sketch; its full signature is gone
        cache = SignatureCache(128, full=False)
    else:
        cache = None if cache_bytes is None else SignatureCache(128, max_bytes=cache_bytes)
    await _index_all(sessionmaker, [root], [story], sigs[:1], cache, 1)
    async with sessionmaker() as session, session.begin():
        await session.execute(text("DELETE FROM stories WHERE id = :i"), {"i": root})
        left = await session.execute(text("SELECT count(*) FROM story_bands"))
        assert left.scalar_one() == params.bands
        got = await dedup_store.index_stories(
            session=session,
            items=[dedup_store.DedupItem(copy, text_hash(near), sigs[1])],
            params=params,
            cache=cache,
        )
    assert (got[copy].status, got[copy].cluster_id, got[copy].nn_jaccard) == ("unique", None, 0.0)
