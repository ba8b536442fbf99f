"""Lossless round trips: every file an export writes is detected and re-imports to the same
stories with the same fields, twice over, on real TinyStories material."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from service.dataset.exporter import ExportOptions, run_export
from service.dataset.import_formats import detect_format
from service.dataset.import_records import instruct_header_of
from service.dataset.importer import import_file
from tests.service.conftest import new_database

DATA = Path(__file__).parents[1] / "data"
FIELDS_OF = {  # what each format carries besides the story
    "text": (),
    "instruct": ("summary", "verb", "noun", "adjective", "features", "header"),
    "json": ("summary", "verb", "noun", "adjective", "features", "header", "model", "prompt"),
    "parquet": ("summary", "verb", "noun", "adjective", "features", "header", "model"),
}


def files_of(out: Path, fmt: str) -> list[Path]:
    ts = out / "tinystories"
    return {
        "text": [ts / "TinyStories-train.txt", ts / "TinyStories-valid.txt"],
        "instruct": [ts / "TinyStoriesInstruct-train.txt", ts / "TinyStoriesInstruct-valid.txt"],
        "json": sorted((ts / "TinyStories_all_data").glob("data*.json")),
        "parquet": sorted((out / "parquet").glob("*.parquet")),
    }[fmt]


async def _import(url: str, files: list[Path]) -> list:
    from service.db import make_engine, make_sessionmaker

    engine = make_engine(url, pool_size=2)
    try:
        return [await import_file(make_sessionmaker(engine), f, batch_size=50) for f in files]
    finally:
        await engine.dispose()


async def stored(url: str) -> dict[str, dict]:
    """The unique stories of a database by text, with every field an export carries."""
    from service.db import make_engine, make_sessionmaker

    engine = make_engine(url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await session.execute(
                text(
                    "SELECT text, summary, verb, noun, adjective, features, model, prompt, "
                    "instruction FROM stories WHERE dedup_status = 'unique'"
                )
            )
            out = {}
            for r in rows.mappings():
                rec = dict(r)
                rec["header"] = instruct_header_of(
                    instruction=rec.pop("instruction"),
                    summary=rec["summary"],
                    words=[rec["verb"], rec["noun"], rec["adjective"]],
                    features=rec["features"],
                )
                out[rec["text"]] = rec
            return out
    finally:
        await engine.dispose()


def export(url: str, out: Path) -> Path:
    run_export(
        url,
        out,
        ExportOptions(validation_fraction=0.3, seed=3, decontaminate=False, records_per_shard=20),
    )
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    """Real material in every layout import reads: release text, Instruct, an all_data shard,
    a JSONL with the recipe at the top level."""
    d = tmp_path_factory.mktemp("src")
    stories = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    train = d / "TinyStories-train.txt"
    parts = [s for s in stories.split("<|endoftext|>") if s.strip()][:40]
    train.write_text("<|endoftext|>".join(parts), encoding="utf-8")
    recs = [json.loads(x) for x in (DATA / "all_data_records_full_sample.jsonl").open()]
    shard = d / "data00.json"
    shard.write_text(json.dumps(recs), encoding="utf-8")
    return [
        train,
        DATA / "TinyStoriesInstruct-valid_first2records.txt",
        shard,
        DATA / "all_data_recipes_sample_vamp.jsonl",
    ]


@pytest.mark.parametrize("fmt", ["text", "instruct", "json", "parquet"])
def test_each_format_round_trips_twice(
    fmt: str, sources, database_url, pg_server, template_db, tmp_path
) -> None:
    asyncio.run(_import(database_url, sources))
    original = asyncio.run(stored(database_url))
    assert len(original) >= 70
    out = export(database_url, tmp_path / "a")
    copies = []
    for round_no in (1, 2):
        url = new_database(pg_server, template_db)
        files = files_of(out, fmt)
        assert {detect_format(f) for f in files} == {fmt}  # detected, no --format needed
        summaries = asyncio.run(_import(url, files))
        assert all(s.unknown_fields is None and s.rejected_count == 0 for s in summaries)
        copies.append(asyncio.run(stored(url)))
        out = export(url, tmp_path / f"round{round_no}")
    for copy in copies:
        assert copy.keys() == original.keys()
        for story, rec in original.items():
            for name in FIELDS_OF[fmt]:
                assert copy[story][name] == rec[name], (fmt, name, story[:40])
    # The real Instruct records keep their exact headers; the all_data records their recipe.
    if fmt in ("instruct", "json", "parquet"):
        headed = [r for r in copies[-1].values() if r["header"].startswith("Features: Dialogue\n")]
        assert headed and headed[0]["summary"].startswith("Sara and Ben")
        lily = next(r for s, r in copies[-1].items() if s.startswith("Lily and Ben are friends"))
        assert (lily["verb"], lily["noun"], lily["adjective"]) == ("hang", "foot", "cute")
        assert lily["header"].startswith("Summary: Lily and Ben play in the park")
    if fmt in ("json", "parquet"):
        assert {r["model"] for r in copies[-1].values()} == {"GPT-4", "GPT-3.5", None}


def test_top_level_recipe_layout_and_unknown_fields(database_url) -> None:
    (summary,) = asyncio.run(_import(database_url, [DATA / "all_data_recipes_sample_vamp.jsonl"]))
    assert summary.inserted == 32
    # one warning line naming every field that was not imported, with its record count
    line = summary.unknown_fields
    assert line is not None and "\n" not in line
    for name in ("archive_member (32 records)", "archive_index", "record_id", "story_sha256"):
        assert name in line
    rows = asyncio.run(stored(database_url))
    goat = next(r for s, r in rows.items() if "helpless goat called Daisy" in s)
    assert (goat["verb"], goat["noun"], goat["adjective"]) == ("dare", "goat", "helpless")
    assert goat["model"] == "GPT-4"
    assert sum(1 for r in rows.values() if r["features"]) >= 10


def test_llama2c_style_loading(database_url, sources, tmp_path) -> None:
    """llama2.c's tinystories.py: shard 0 is the test split, the rest train, records' story."""
    from datasets import load_from_disk

    asyncio.run(_import(database_url, sources))
    out = export(database_url, tmp_path / "x")
    shard_filenames = sorted((out / "tinystories" / "TinyStories_all_data").glob("*.json"))
    assert len(shard_filenames) >= 3  # records_per_shard=20: test + several train shards
    test_shards, train_shards = shard_filenames[:1], shard_filenames[1:]

    def stories(shards: list[Path]) -> list[str]:
        out_ = []
        for shard in shards:
            with open(shard) as f:
                data = json.load(f)
            out_ += [example["story"].strip() for example in data]
        return out_

    dd = load_from_disk(str(out))
    assert stories(test_shards) == dd["validation"]["text"]
    assert stories(train_shards) == dd["train"]["text"]


def test_two_story_export_gives_llama2c_two_shards(database_url, sources, tmp_path) -> None:
    asyncio.run(_import(database_url, sources[1:2]))  # the 2 real Instruct records
    out = tmp_path / "two"
    run_export(database_url, out, ExportOptions(validation_fraction=0.5, seed=1))
    shards = sorted((out / "tinystories" / "TinyStories_all_data").glob("*.json"))
    assert [len(json.loads(p.read_text())) for p in shards] == [1, 1]


def test_card_counts_what_was_exported_with_exact_maxima(database_url, tmp_path) -> None:
    """Sources counted after the duplicate filter; the longest real story (4,107 characters)
    reported as it is, not capped."""
    import yaml

    src = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    stories = [s.strip() for s in src.split("<|endoftext|>") if s.strip()]
    path = tmp_path / "train.txt"
    path.write_text("<|endoftext|>".join([*stories, *stories[:50]]), encoding="utf-8")
    asyncio.run(_import(database_url, [path]))
    out = tmp_path / "card"
    result = run_export(database_url, out, ExportOptions(decontaminate=False))
    front = yaml.safe_load((out / "README.md").read_text(encoding="utf-8").split("---\n")[1])
    assert result.counts["total"] == 1200  # the 50 copies filtered out
    assert sum(front["provenance"]["sources"].values()) == 1200
    chars = front["token_stats"]["characters_per_story"]
    assert chars["max"] == max(map(len, stories)) == 4107
    words = front["token_stats"]["words_per_story"]
    assert words["max"] == max(len(s.split()) for s in stories)


def test_instruct_format_exports_only_stories_with_instruct_metadata(
    database_url, sources, tmp_path
) -> None:
    asyncio.run(_import(database_url, sources[:3]))  # 40 plain stories, 2 Instruct, 3 all_data
    out = tmp_path / "instruct"
    result = run_export(
        database_url,
        out,
        ExportOptions(format="instruct", validation_fraction=0.4, decontaminate=False),
    )
    assert result.counts["total"] == 5 and result.counts["excluded_no_instruct"] == 40
    text = (out / "tinystories" / "TinyStoriesInstruct-train.txt").read_text(encoding="utf-8")
    text += (out / "tinystories" / "TinyStoriesInstruct-valid.txt").read_text(encoding="utf-8")
    assert text.count("Story: \n\n") == 5 and text.count("Summary: ") == 5
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "only stories with TinyStories-Instruct metadata" in card
