"""The workers' dedup indexer: one worker leads for as long as it lives, and loses the lead
when its connection goes or stalls, so another takes over."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from service.dataset.minhash import MinHashParams
from service.store.imports import insert_stories
from service.work import indexer as indexer_mod
from service.work.indexer import DedupIndexer
from tests.service.store.test_dedup_store import real_stories, row
from tests.service.work.test_spend import wait_until


def make_indexer(sessionmaker, name: str) -> DedupIndexer:
    return DedupIndexer(
        sessionmaker=sessionmaker,
        params=MinHashParams(),
        worker_id=name,
        batch=3,
        interval_s=0.05,
        backlog_cap=100,
        stopping=lambda: False,
    )


async def add_stories(sessionmaker, stories: list[str]) -> None:
    async with sessionmaker() as session, session.begin():
        await insert_stories(session=session, stories=[row(s) for s in stories])


async def unchecked(sessionmaker) -> int:
    async with sessionmaker() as session:
        got = await session.execute(
            text("SELECT count(*) FROM stories WHERE dedup_status IS NULL AND accepted")
        )
        return int(got.scalar_one())


async def lead_pid(indexer: DedupIndexer) -> int:
    assert indexer._lead is not None
    got = await indexer._lead[0].execute(text("SELECT pg_backend_pid()"))
    pid = int(got.scalar_one())
    await indexer._lead[0].commit()
    return pid


async def test_the_lead_stays_with_one_worker_until_its_connection_goes(sessionmaker) -> None:
    stories = real_stories(12)
    await add_stories(sessionmaker, stories[:6])
    a, b = make_indexer(sessionmaker, "a"), make_indexer(sessionmaker, "b")
    try:
        assert await a._index(lead=True) == 3 and a.leading
        assert await b._index(lead=True) is None and not b.leading  # a leads
        assert await a._index(lead=True) == 3  # and keeps leading between its batches
        assert await b._index(lead=True) is None
        assert await unchecked(sessionmaker) == 0
        assert len(a.cache) == 6 and len(b.cache) == 0  # one cache serves every batch

        # The lead's process dies (its connection goes): the next worker takes over.
        await add_stories(sessionmaker, stories[6:9])
        pid = await lead_pid(a)
        async with sessionmaker() as session, session.begin():
            await session.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        assert await b._index(lead=True) == 3 and b.leading
        # The old lead notices on its next round: it gives up and does not index twice.
        assert await a._index(lead=True) is None and not a.leading
        # A worker that stops (or whose loop ends) hands the lead on.
        await b.release_lead()
        await add_stories(sessionmaker, stories[9:])
        assert await a._index(lead=True) == 3 and a.leading
        assert await unchecked(sessionmaker) == 0
        # Catch-up on the way out does not need the lead: it waits for the index lock.
        await add_stories(sessionmaker, [stories[0] + " The end."])
        await b.catch_up()
        assert await unchecked(sessionmaker) == 0
    finally:
        await a.release_lead()
        await b.release_lead()


async def lead_when_free(indexer: DedupIndexer, stall_s: float = 60.0) -> int:
    """The first batch `indexer` indexes as the lead, once the lock is free (waits while the
    batches it tries keep coming back without the lead, at most `stall_s`)."""
    got: list[int | None] = []

    async def leads() -> bool:
        got.append(await indexer._index(lead=True))
        return got[-1] is not None

    await wait_until(leads, what=f"{indexer.worker_id} to take the lead", stall_s=stall_s)
    return int(got[-1] or 0)


async def test_a_stalled_lead_loses_the_lead(sessionmaker, monkeypatch) -> None:
    monkeypatch.setattr(indexer_mod, "LEAD_IDLE_TIMEOUT", "300ms")
    await add_stories(sessionmaker, real_stories(4))
    a, b = make_indexer(sessionmaker, "a"), make_indexer(sessionmaker, "b")
    try:
        assert await a._index(lead=True) == 3
        # `a` goes quiet (a paused process): Postgres ends its session, the lock goes with it.
        assert await lead_when_free(b) == 1 and b.leading
    finally:
        await a.release_lead()
        await b.release_lead()


async def test_the_loop_gives_the_lead_back_when_it_ends(sessionmaker) -> None:
    await add_stories(sessionmaker, real_stories(5))
    a, b = make_indexer(sessionmaker, "a"), make_indexer(sessionmaker, "b")
    task = asyncio.create_task(a.loop())
    try:

        async def all_checked() -> bool:
            return not await unchecked(sessionmaker)

        await wait_until(all_checked, what="a's loop to check every story")
        for _ in range(3):
            assert await b._index(lead=True) is None  # a leads while its loop runs
    finally:  # a failing assertion must not leave the loop holding a connection
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not a.leading
    # Cancelled mid-statement, a's connection is closed without an unlock, and the server
    # drops the lock when its backend exits, a moment later: b takes it then. Well before the
    # idle timeout would free a lock the loop kept (LEAD_IDLE_TIMEOUT, 15 s).
    assert await lead_when_free(b, stall_s=10.0) == 0 and b.leading
    await b.release_lead()
