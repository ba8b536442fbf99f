"""Dedup index in Postgres: exact and near duplicates across sessions, params, dedup pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from service.dataset.dedup import run_dedup_pass, signatures
from service.dataset.minhash import MinHashParams, text_hash
from service.store import dedup as dedup_store
from service.store.imports import insert_stories

DATA = Path(__file__).parents[1] / "data"


def real_stories(n: int) -> list[str]:
    raw = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    return [s.strip() for s in raw.split("<|endoftext|>") if len(s.split()) > 80][:n]


def near_copy(story: str) -> str:
    """Planted edit: swap two words near the end and drop the last sentence."""
    words = story.split()
    words[-12], words[-11] = words[-11], words[-12]
    return " ".join(words[:-3])


def row(story: str, model: str = "m1") -> dict:
    return {"text": story, "accepted": True, "text_hash": text_hash(story), "model": model}


async def store_and_index(sessionmaker, stories: list[str], model: str = "m1") -> dict:
    """One 'process': its own session and transaction, signatures computed beforehand."""
    params = MinHashParams()
    sigs = signatures(stories, params)
    async with sessionmaker() as session, session.begin():
        ids = await insert_stories(session=session, stories=[row(s, model) for s in stories])
        items = [
            dedup_store.DedupItem(i, text_hash(s), sig)
            for i, s, sig in zip(ids, stories, sigs, strict=True)
        ]
        outcomes = await dedup_store.index_stories(session=session, items=items, params=params)
    return {i: outcomes[i] for i in ids}


async def test_exact_and_near_duplicates_across_sessions(sessionmaker) -> None:
    base = real_stories(5)
    first = await store_and_index(sessionmaker, base)
    ids = list(first)
    assert [o.status for o in first.values()] == ["unique"] * 5
    # A second "process" sees the index the first one wrote.
    second = await store_and_index(
        sessionmaker,
        [base[1].upper(), near_copy(base[2]), "A brand new story about a red kite. " * 8],
        model="m2",
    )
    exact, near, new = second.values()
    assert (exact.status, exact.cluster_id) == ("exact_duplicate", ids[1])
    assert (near.status, near.cluster_id) == ("near_duplicate", ids[2])
    assert (new.status, new.cluster_id) == ("unique", None)
    # A near copy of a near copy still points at the earliest story of the cluster.
    third = await store_and_index(sessionmaker, [near_copy(near_copy(base[2]))])
    (o,) = third.values()
    assert (o.status, o.cluster_id) == ("near_duplicate", ids[2])
    async with sessionmaker() as session:
        stats = await dedup_store.duplicate_stats(session=session)
    by_model = {s["model"]: s for s in stats}
    assert by_model["m2"]["duplicates"] == 2 and by_model["m2"]["checked"] == 3
    assert by_model["m2"]["duplicate_rate"] == pytest.approx(2 / 3, abs=1e-5)
    assert by_model["m1"]["duplicates"] == 1 and by_model["m1"]["checked"] == 6


async def test_duplicates_inside_one_batch(sessionmaker) -> None:
    base = real_stories(2)
    out = list(
        (await store_and_index(sessionmaker, [base[0], near_copy(base[0]), base[0]])).items()
    )
    (id0, o0), (_, o1), (_, o2) = out
    assert o0.status == "unique"
    assert (o1.status, o1.cluster_id) == ("near_duplicate", id0)
    assert (o2.status, o2.cluster_id) == ("exact_duplicate", id0)


async def test_only_roots_enter_the_band_index_once(sessionmaker) -> None:
    base = real_stories(3)
    params = MinHashParams()
    first = await store_and_index(sessionmaker, [*base, near_copy(base[0])])
    roots = [i for i, o in first.items() if o.status == "unique"]
    assert len(roots) == 3

    async def band_rows() -> dict[int, int]:
        async with sessionmaker() as session:
            rows = await session.execute(
                text("SELECT story_id, count(*) FROM story_bands GROUP BY story_id")
            )
            return dict(rows.all())

    assert await band_rows() == {i: params.bands for i in roots}
    # Indexing the same stories again (e.g. a retried batch) adds no second copy of a root.
    sigs = signatures(base, params)
    async with sessionmaker() as session, session.begin():
        again = await dedup_store.index_stories(
            session=session,
            items=[
                dedup_store.DedupItem(i, text_hash(s), sig)
                for i, s, sig in zip(roots, base, sigs, strict=True)
            ],
            params=params,
        )
    assert {o.status for o in again.values()} == {"unique"}
    assert await band_rows() == {i: params.bands for i in roots}


async def test_changed_params_are_detected(sessionmaker) -> None:
    await store_and_index(sessionmaker, real_stories(1))
    async with sessionmaker() as session, session.begin():
        with pytest.raises(dedup_store.DedupParamsMismatch, match="dedup --rebuild"):
            await dedup_store.ensure_params(session=session, params=MinHashParams(bands=20))


async def test_dedup_pass_over_stored_stories(sessionmaker) -> None:
    base = real_stories(30)
    stories = [*base, near_copy(base[3]), base[7]]
    async with sessionmaker() as session, session.begin():
        await insert_stories(session=session, stories=[row(s) for s in stories])
    seen = []
    summary = await run_dedup_pass(
        sessionmaker, batch_size=7, on_progress=lambda d, t: seen.append((d, t))
    )
    assert (summary.checked, summary.near_duplicate, summary.exact_duplicate) == (32, 1, 1)
    assert seen[-1] == (32, 32)
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                text("SELECT dedup_status, dedup_cluster_id, id FROM stories ORDER BY id")
            )
        ).all()
    assert rows[30][:2] == ("near_duplicate", rows[3][2])
    assert rows[31][:2] == ("exact_duplicate", rows[7][2])
    # Nothing left to do; a rebuild with other parameters redoes everything.
    assert (await run_dedup_pass(sessionmaker)).checked == 0
    rebuilt = await run_dedup_pass(sessionmaker, params=MinHashParams(bands=32), rebuild=True)
    assert rebuilt.checked == 32 and rebuilt.exact_duplicate == 1


async def test_one_indexer_at_a_time_checks_job_stories_and_counts_them(sessionmaker) -> None:
    import asyncio

    from service.dataset.dedup import index_pending
    from service.store.rollups import duplicates_by_model
    from tests.service.conftest import create_test_job

    job_id = await create_test_job(sessionmaker, 1)
    base = real_stories(6)
    stored = [*base, near_copy(base[0]), base[1], near_copy(base[2])]
    async with sessionmaker() as session, session.begin():  # as workers store them: unchecked
        await insert_stories(
            session=session, stories=[dict(row(s, "m"), job_id=job_id) for s in stored]
        )
        # A rejected story is never checked.
        await insert_stories(session=session, stories=[dict(row(base[3]), accepted=False)])

    params = MinHashParams()
    first, second = await asyncio.gather(
        index_pending(sessionmaker, params, limit=5), index_pending(sessionmaker, params, limit=5)
    )
    assert sorted([first, second]) == [4, 5]  # one after the other, never the same story twice
    assert await index_pending(sessionmaker, params) == 0
    async with sessionmaker() as session:
        statuses = [
            r[0]
            for r in await session.execute(
                text("SELECT dedup_status FROM stories WHERE accepted ORDER BY id")
            )
        ]
        rejected = (
            await session.execute(text("SELECT dedup_status FROM stories WHERE NOT accepted"))
        ).scalar_one()
        # The job view reads these rollups; stories_accepted comes from the workers' own rows.
        await session.execute(
            text("UPDATE rollups_minute SET stories_accepted = 9 WHERE job_id = :j"),
            {"j": job_id},
        )
        (m,) = await duplicates_by_model(session=session, job_id=job_id)
    assert statuses == ["unique"] * 6 + ["near_duplicate", "exact_duplicate", "near_duplicate"]
    assert rejected is None
    assert (m["duplicates"], m["exact_duplicates"], m["near_duplicates"]) == (3, 1, 2)
    assert m["duplicate_rate"] == pytest.approx(3 / 9, abs=1e-5)
