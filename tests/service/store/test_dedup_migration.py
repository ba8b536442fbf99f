"""Migration 0010 keeps an existing dedup index usable: hex text hashes become raw bytes (any
other string its UTF-8 bytes, as store.dedup.hash_bytes reads it)."""

from __future__ import annotations

import psycopg

from service.migrate import upgrade


def test_hex_text_hashes_become_bytes_and_still_find_duplicates(empty_database_url: str) -> None:
    import asyncio

    from service.dataset.dedup import signatures
    from service.dataset.minhash import MinHashParams, text_hash
    from service.db import make_engine, make_sessionmaker
    from service.store import dedup as dedup_store
    from service.store.imports import insert_stories

    story = "Once upon a time, a little fox found a red ball in the tall grass near the river."
    upgrade(empty_database_url, "0009_worker_providers")
    libpq = empty_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq) as conn:
        first = conn.execute(
            "INSERT INTO stories (text, accepted, text_hash, model, dedup_status) "
            "VALUES (%s, true, %s, 'm', 'unique') RETURNING id",
            (story, text_hash(story)),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO story_hashes (text_hash, story_id) VALUES (%s, %s), ('h0', 0)",
            (text_hash(story), first),
        )
    upgrade(empty_database_url)
    with psycopg.connect(libpq) as conn:
        stored, odd = (
            bytes(r[0])
            for r in conn.execute("SELECT text_hash FROM story_hashes ORDER BY story_id DESC")
        )
        indexes = {r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes")}
    assert stored == bytes.fromhex(text_hash(story)) and len(stored) == 32
    assert odd == b"h0" == dedup_store.hash_bytes("h0")  # not hex: its UTF-8 bytes, as the code
    assert any("story_bands USING btree (band_hash, story_id)" in d for d in indexes)

    async def index_copy() -> dedup_store.DedupOutcome:
        engine = make_engine(empty_database_url, pool_size=1)
        params = MinHashParams()
        copy = story.upper()  # same normalised text: an exact duplicate of the stored story
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                (sid,) = await insert_stories(
                    session=session,
                    stories=[{"text": copy, "accepted": True, "text_hash": text_hash(copy)}],
                )
                item = dedup_store.DedupItem(sid, text_hash(copy), signatures([copy], params)[0])
                out = await dedup_store.index_stories(session=session, items=[item], params=params)
            return out[sid]
        finally:
            await engine.dispose()

    outcome = asyncio.run(index_copy())
    assert (outcome.status, outcome.cluster_id) == ("exact_duplicate", first)
