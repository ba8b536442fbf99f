"""What an export says and holds matches the store: no separator inside a story, duplicate
clusters on one side of the split, exact and near duplicates told apart, the template versions
named, partial recipes keeping their roles through every release file."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from sqlalchemy import text

from service.dataset.export_writer import split_of
from service.dataset.exporter import ExportOptions, run_export
from service.dataset.import_formats import detect_format, iter_stories
from service.dataset.minhash import text_hash
from tests.service.conftest import new_database
from tests.service.dataset.cli_runner import dataset_cli
from tests.service.dataset.test_round_trip import _import, files_of

DATA = Path(__file__).parents[1] / "data"
SEP = "<|endoftext|>"
JOB_ID = uuid.UUID("00000000-0000-4000-8000-0000000000f1")


def real(n: int) -> list[str]:
    src = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    return [s.strip() for s in src.split(SEP) if s.strip()][:n]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def card_of(out: Path) -> dict:
    return yaml.safe_load((out / "README.md").read_text(encoding="utf-8").split("---\n")[1])


def rows_by_split(out: Path) -> dict[str, list[dict]]:
    return {
        s: [
            r
            for p in sorted((out / "parquet").glob(f"{s}-*.parquet"))
            for r in pq.read_table(p).to_pylist()
        ]
        for s in ("train", "validation")
    }


async def _job_stories(url: str, stories: list[str]) -> None:
    """A v1 job's accepted stories, stored as a worker stores them (no import checks)."""
    from service.db import make_engine, make_sessionmaker

    engine = make_engine(url, pool_size=1)
    async with make_sessionmaker(engine)() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO jobs (id, n_stories, models, template_version, max_tokens, seed, "
                "budget_usd, provider) VALUES (:id, :n, '[]', 'v1', 400, 0, 1, 'simulator')"
            ),
            {"id": JOB_ID, "n": len(stories)},
        )
        for story in stories:
            await session.execute(
                text(
                    "INSERT INTO stories (job_id, text, accepted, text_hash, model, provider, "
                    "cost_usd, verb, noun, adjective, features) VALUES (:j, :t, true, :h, "
                    "'simulator-story-1', 'simulator', 0.002, 'run', 'dog', 'happy', '[]')"
                ),
                {"j": JOB_ID, "t": story, "h": text_hash(story)},
            )
    await engine.dispose()


def test_import_skips_a_story_holding_the_separator(database_url, tmp_path, monkeypatch) -> None:
    stories = real(4)
    glued = "Anna had a boat. She sailed far away.<|endoftext|>Once upon a time, a cat sat."
    path = write_jsonl(
        tmp_path / "stories.jsonl",
        [
            {"story": glued, "model": "x"},
            {"story": stories[0], "model": "x"},
            {"story": stories[1], "summary": f"Tom plays.{SEP}Sue naps.", "model": "x"},
            *({"story": s, "model": "x"} for s in stories[2:]),
        ],
    )
    r = dataset_cli(database_url, monkeypatch, "import", str(path))
    assert r.exit_code == 0, r.output
    assert f"skipped stories holding the {SEP} separator (records 0, 2...)" in r.output
    assert "imported 3 stories" in r.output and "skipped 2" in r.output


def test_export_never_writes_a_separator_inside_a_story(database_url, tmp_path, monkeypatch):
    """A stored story holding the separator (a generated one: the story checks let it through)
    is left out of every file and counted; the text files read back as the parquet rows."""
    stories = real(12)
    train = tmp_path / "train.txt"
    train.write_text(f"\n{SEP}\n".join(stories[:10]), encoding="utf-8")
    asyncio.run(_import(database_url, [train]))
    asyncio.run(_job_stories(database_url, [stories[10], f"{stories[11]}{SEP}The end."]))
    out = tmp_path / "out"
    args = ("--validation-fraction", "0.3", "--seed", "3", "--no-decontaminate")
    r = dataset_cli(database_url, monkeypatch, "export", "--out", str(out), *args)
    assert r.exit_code == 0, r.output
    assert "exported 11 stories" in r.output and f"left out for holding {SEP} 1)" in r.output
    rows = rows_by_split(out)
    for split, (plain, instruct) in {
        "train": ("TinyStories-train.txt", "TinyStoriesInstruct-train.txt"),
        "validation": ("TinyStories-valid.txt", "TinyStoriesInstruct-valid.txt"),
    }.items():
        want = [r["text"] for r in rows[split]]
        assert [s.text for s in iter_stories(out / "tinystories" / plain)] == want
        path = out / "tinystories" / instruct
        assert detect_format(path) == "instruct"
        assert [s.text for s in iter_stories(path)] == want
    assert "left out for holding `<|endoftext|>`" in (out / "README.md").read_text("utf-8")
    assert card_of(out)["counts"]["excluded_separator"] == 1


@pytest.fixture
def with_duplicates(database_url, tmp_path) -> str:
    """40 real stories, near copies of 12 (last sentence dropped), exact copies of 6 others
    (upper case), and a v1 job's story."""
    stories = real(41)
    near = [s[: s.rstrip('.!?"').rfind(".") + 1] for s in stories[:12]]
    exact = [s.upper() for s in stories[12:18]]
    path = tmp_path / "train.txt"
    path.write_text(f"\n{SEP}\n".join([*stories[:40], *near, *exact]), encoding="utf-8")
    asyncio.run(_import(database_url, [path]))
    asyncio.run(_job_stories(database_url, stories[40:]))
    return database_url


def test_duplicate_clusters_stay_in_one_split(with_duplicates, tmp_path) -> None:
    out = tmp_path / "dups"
    opts = ExportOptions(
        include_duplicates=True, validation_fraction=0.5, seed=0, decontaminate=False
    )
    run_export(with_duplicates, out, opts)
    members: dict[str, list[str]] = defaultdict(list)  # cluster root -> splits of its stories
    for split, rows in rows_by_split(out).items():
        for r in rows:
            members[r["dedup_cluster"] or r["id"]].append(split)
    clusters = [m for m in members.values() if len(m) > 1]
    assert len(clusters) == 18  # every copy found its original
    assert all(len(set(m)) == 1 for m in clusters), clusters
    # Without duplicates, every story keeps the split of its own hash: the same files as before.
    plain = tmp_path / "plain"
    run_export(with_duplicates, plain, opts.model_copy(update={"include_duplicates": False}))
    for split, rows in rows_by_split(plain).items():
        assert len(rows) > 5
        assert all(
            split_of(r["story_hash"], seed=0, validation_fraction=0.5) == split for r in rows
        )


def test_card_tells_exact_from_near_duplicates_and_names_template_versions(
    with_duplicates, tmp_path
) -> None:
    out = tmp_path / "card"
    opts = ExportOptions(include_duplicates=True, decontaminate=False)
    result = run_export(with_duplicates, out, opts)
    assert result.counts["total"] == 59
    dedup = card_of(out)["dedup"]
    assert (dedup["exact_duplicates"], dedup["near_duplicates"]) == (6, 12)  # in the store
    assert dedup["exact_duplicates_exported"] == 6 and dedup["near_duplicates_exported"] == 12
    assert dedup["exact_duplicate_rate"] == round(6 / 59, 6)
    body = (out / "README.md").read_text(encoding="utf-8")
    assert "Duplicates exported: 6 exact, 12 near;" in body
    assert card_of(out)["template_versions"] == ["v1"]
    manifest = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert manifest["template_versions"] == ["v1"]


ROLES = ("verb", "noun", "adjective")


async def _roles(url: str) -> dict[str, tuple]:
    from service.db import make_engine, make_sessionmaker

    engine = make_engine(url, pool_size=1)
    async with make_sessionmaker(engine)() as session:
        rows = await session.execute(text("SELECT text, verb, noun, adjective FROM stories"))
        found = {r[0]: tuple(r[1:]) for r in rows}
    await engine.dispose()
    return found


@pytest.mark.parametrize("fmt", ["instruct", "json", "parquet"])
def test_partial_recipe_keeps_its_roles_through_every_file(
    fmt, database_url, pg_server, template_db, tmp_path
) -> None:
    stories = real(8)
    recipes = [
        {"noun": "dog", "adjective": "happy"},
        {"verb": "run", "adjective": "big"},
        {"adjective": "sad"},
        {"verb": "hop"},
        {"verb": "hang", "noun": "foot", "adjective": "cute"},
        {"noun": "cat"},
        {},
        {"verb": "jump", "noun": "ball"},
    ]
    src = write_jsonl(
        tmp_path / "partial.jsonl",
        [{"story": s, "model": "x", "recipe": r} for s, r in zip(stories, recipes, strict=True)],
    )
    asyncio.run(_import(database_url, [src]))
    want = {s: tuple(r.get(k) for k in ROLES) for s, r in zip(stories, recipes, strict=True)}
    assert asyncio.run(_roles(database_url)) == want
    out = tmp_path / "out"
    run_export(
        database_url, out, ExportOptions(validation_fraction=0.3, seed=3, decontaminate=False)
    )
    copy = new_database(pg_server, template_db)
    summaries = asyncio.run(_import(copy, files_of(out, fmt)))
    assert sum(s.inserted for s in summaries) == 8
    assert asyncio.run(_roles(copy)) == want
    ts = out / "tinystories"
    if fmt == "instruct":  # an empty slot holds the missing verb's place
        both = "".join(p.read_text("utf-8") for p in files_of(out, "instruct"))
        assert "Words: , dog, happy\n" in both and "Words: hang, foot, cute\n" in both
        assert "Words: hop\n" in both and "Words: run, , big\n" in both
    if fmt == "json":  # the release's words list, and the roles beside it where it needs them
        recs = [
            r
            for p in sorted(ts.glob("TinyStories_all_data/*.json"))
            for r in json.loads(p.read_text("utf-8"))
        ]
        dog = next(r for r in recs if r["story"] == stories[0])
        assert dog["instruction"]["words"] == ["dog", "happy"]
        assert dog["recipe"] == {"verb": None, "noun": "dog", "adjective": "happy"}
        full = next(r for r in recs if r["story"] == stories[4])
        assert full["instruction"]["words"] == ["hang", "foot", "cute"] and "recipe" not in full
