"""`tinystories import` of the three release formats: idempotent, resumable, no partial batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from service.dataset.import_formats import ImportFormatError
from service.dataset.importer import import_file

DATA = Path(__file__).parents[1] / "data"


async def count(sessionmaker, where: str = "true") -> int:
    async with sessionmaker() as session:
        return (await session.execute(text(f"SELECT count(*) FROM stories WHERE {where}"))).scalar()


def json_shard(tmp_path: Path) -> Path:
    lines = (DATA / "all_data_records_full_sample.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    path = tmp_path / "data00.json"
    path.write_text(json.dumps(records))
    return path


async def test_three_formats_twice_same_count(sessionmaker, tmp_path: Path) -> None:
    files = [
        DATA / "TinyStories-train-sample1200.txt",
        DATA / "TinyStoriesInstruct-valid_first2records.txt",
        json_shard(tmp_path),
    ]
    first = [await import_file(sessionmaker, f, batch_size=500) for f in files]
    assert [s.format for s in first] == ["text", "instruct", "json"]
    assert first[0].inserted >= 1100 and first[1].inserted == 2 and first[2].inserted == 3
    total = await count(sessionmaker)
    assert total == sum(s.inserted for s in first)
    again = [await import_file(sessionmaker, f) for f in files]
    assert all(s.already_done and s.inserted == 0 for s in again)
    assert await count(sessionmaker) == total
    # Provenance and dedup status on every imported row.
    assert await count(sessionmaker, "source = 'import:data00.json'") == 3
    assert await count(sessionmaker, "dedup_status IS NULL") == 0
    assert await count(sessionmaker, "summary IS NOT NULL AND instruction LIKE '%Summary:%'") >= 2
    async with sessionmaker() as session:
        rec = (
            await session.execute(
                text("SELECT verb, noun, adjective, features FROM stories WHERE source = :s"),
                {"s": "import:data00.json"},
            )
        ).first()
    assert all(rec[:3]) and isinstance(rec[3], list)


async def test_same_stories_in_another_file_are_exact_duplicates(sessionmaker, tmp_path) -> None:
    src = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    stories = [s for s in src.split("<|endoftext|>") if s.strip()][:20]
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text("<|endoftext|>".join(stories[:10]))
    b.write_text("<|endoftext|>".join(stories[5:20]))
    await import_file(sessionmaker, a)
    second = await import_file(sessionmaker, b)
    assert second.inserted == 15 and second.duplicates >= 5
    assert await count(sessionmaker, "dedup_status = 'exact_duplicate'") >= 5


async def test_truncated_shard_leaves_no_rows_of_the_bad_batch(sessionmaker, tmp_path) -> None:
    good = json_shard(tmp_path).read_text()
    bad = tmp_path / "data01.json"
    bad.write_text(good[: int(len(good) * 0.8)])  # cut inside the third record
    with pytest.raises(ImportFormatError) as err:
        await import_file(sessionmaker, bad, batch_size=2)
    assert "data01.json" in str(err.value)
    # The first batch (2 records) was committed, nothing of the failing one.
    assert await count(sessionmaker) == 2
    async with sessionmaker() as session:
        status, error, nxt = (
            await session.execute(text("SELECT status, error, next_record FROM imports"))
        ).one()
    assert status == "failed" and "data01.json" in error and nxt == 2
    # A rerun resumes at record 2 and fails again without duplicating the first batch.
    with pytest.raises(ImportFormatError):
        await import_file(sessionmaker, bad, batch_size=2)
    assert await count(sessionmaker) == 2


async def test_unknown_format_is_a_clear_error(sessionmaker, tmp_path) -> None:
    junk = tmp_path / "x.bin"
    junk.write_bytes(b"\x00\x01binary")
    with pytest.raises(ImportFormatError, match="binary"):
        await import_file(sessionmaker, junk)
    assert await count(sessionmaker) == 0


def test_cli_import_and_dedup(database_url: str, tmp_path: Path, monkeypatch) -> None:
    import psycopg
    import typer
    from typer.testing import CliRunner

    from service.dataset import cli as dataset_cli
    from service.dataset.minhash import text_hash

    monkeypatch.setenv("DATABASE_URL", database_url)
    app = typer.Typer()
    dataset_cli.register(app)
    run = lambda *a: CliRunner().invoke(app, list(a))  # noqa: E731
    src = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    stories = [s.strip() for s in src.split("<|endoftext|>") if s.strip()][:12]
    path = tmp_path / "train.txt"
    path.write_text("<|endoftext|>".join(stories))
    r = run("import", str(path))
    assert r.exit_code == 0 and "imported 12 stories" in r.output, r.output
    r = run("import", str(path), "--format", "text")
    assert r.exit_code == 0 and "already imported" in r.output
    r = run("import", str(path), "--format", "csv")
    assert r.exit_code == 2 and "--format" in r.output
    bad = tmp_path / "data02.json"
    bad.write_text('[{"story": "Once upon a time", "instruction": {}}, {"story": "The')
    r = run("import", str(bad))  # a runtime failure: exit 1, one line saying what was kept
    assert r.exit_code == 1 and r.output.startswith("error: ") and r.output.count("\n") == 1
    assert "record 1" in r.output and "nothing of this file was stored" in r.output
    # Several shards in one command (one signature cache across them): one line per file; a
    # file that is not stories among them is refused before any of them is stored.
    halves = [tmp_path / "a.txt", tmp_path / "b.txt"]
    more = [s.strip() for s in src.split("<|endoftext|>") if s.strip()][12:30]
    halves[0].write_text("<|endoftext|>".join(more[:9]))
    halves[1].write_text("<|endoftext|>".join([*more[9:], more[0]]))  # one exact copy
    words = tmp_path / "words.csv"
    words.write_text("word,count\nball,3\n")
    r = run("import", str(halves[0]), str(words), str(halves[1]))
    assert r.exit_code == 1 and str(words) in r.output and "nothing was stored" in r.output
    r = run("import", str(halves[0]), str(halves[1]))
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].startswith("imported 9 stories from ") and "a.txt" in lines[0]
    assert lines[1].startswith("imported 10 stories from ") and "duplicates 1," in lines[1]
    # Stories stored without a dedup status: the pass finds the planted copy.
    copy = stories[4].replace(".", "!", 1)
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        for t in (stories[0] + " The end.", copy, "A tiny new story about a blue bird. " * 6):
            conn.execute(
                "INSERT INTO stories (text, accepted, text_hash) VALUES (%s, true, %s)",
                (t, text_hash(t)),
            )
    r = run("dedup")
    assert r.exit_code == 0, r.output
    assert "checked=3 " in r.output and "exact_duplicates=1" in r.output, r.output
    assert "near_duplicates=1" in r.output


async def _dedup_state(sessionmaker) -> tuple[list, dict]:
    from service.store.diversity import read_sketch
    from service.store.models_diversity import ALL_STORIES, NO_JOB

    async with sessionmaker() as session:
        stories = (
            await session.execute(
                text(
                    "SELECT id, dedup_status, dedup_cluster_id, nn_jaccard FROM stories ORDER BY id"
                )
            )
        ).all()
        terms = (
            await session.execute(
                text("SELECT scope, kind, term, count FROM diversity_terms ORDER BY 1, 2, 3")
            )
        ).all()
        sums = {}
        for scope in (NO_JOB, ALL_STORIES):
            sketch = await read_sketch(session=session, scope=scope)
            assert sketch is not None
            sums[scope] = (
                sketch.stories, sketch.words, sketch.ngrams, sketch.hll.tobytes(),
                sketch.length_hist, sketch.vocab_hist, sketch.nn_hist, dict(sketch.features),
            )  # fmt: skip
    return [tuple(r) for r in stories], {"sums": sums, "terms": [tuple(t) for t in terms]}


async def test_import_verdicts_and_diversity_equal_a_dedup_rebuild(sessionmaker, tmp_path) -> None:
    """The import checks and sketches stories as it reads them; `tinystories dedup --rebuild`
    checks the stored stories again and sketches them from the table: same verdicts, same
    nearest-neighbour Jaccard on every row, same diversity sums."""
    from service.dataset.dedup import run_dedup_pass

    src = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    stories = [s.strip() for s in src.split("<|endoftext|>") if len(s.split()) > 60][:300]
    near = [" ".join(s.split()[:-4]) for s in stories[::10]]  # last words dropped
    exact = [s.upper() for s in stories[5::30]]
    mixed = stories[:150] + near + exact + stories[150:]  # copies before and after originals
    path = tmp_path / "mixed.txt"
    path.write_text("\n<|endoftext|>\n".join(mixed), encoding="utf-8")
    summary = await import_file(sessionmaker, path, batch_size=64)
    assert summary.inserted == len(mixed)
    imported_rows, imported_sums = await _dedup_state(sessionmaker)
    statuses = [r[1] for r in imported_rows]
    assert statuses.count("exact_duplicate") == len(exact)
    assert statuses.count("near_duplicate") >= len(near) * 0.8
    assert all(r[3] is not None for r in imported_rows)  # every row has its nearest Jaccard
    assert {r[3] for r in imported_rows if r[1] == "exact_duplicate"} == {1.0}

    await run_dedup_pass(sessionmaker, rebuild=True, batch_size=100)
    rebuilt_rows, rebuilt_sums = await _dedup_state(sessionmaker)
    assert imported_rows == rebuilt_rows
    assert imported_sums == rebuilt_sums
