"""Bad input through `tinystories import`: one clear line (record or byte), exit 1, and the
store as it was or the message saying what was kept and how to resume."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import psycopg
import pytest

from tests.service.dataset.cli_runner import dataset_cli

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture
def run(database_url: str, monkeypatch: pytest.MonkeyPatch):
    return lambda *a: dataset_cli(database_url, monkeypatch, *map(str, a))


def stored(database_url: str) -> int:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        return conn.execute("SELECT count(*) FROM stories").fetchone()[0]


def real_stories(n: int) -> list[str]:
    src = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    return [s.strip() for s in src.split("<|endoftext|>") if s.strip()][:n]


def one_error_line(r, *needles: str) -> None:
    assert r.exit_code == 1, r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    for needle in needles:
        assert needle in r.output, (needle, r.output)


def test_truncated_shard_says_what_was_kept_and_resumes(run, database_url, tmp_path) -> None:
    recs = [{"story": s, "instruction": {"words": ["a"]}} for s in real_stories(7)]
    whole = json.dumps(recs)
    shard = tmp_path / "data03.json"
    shard.write_text(whole[: whole.index(recs[5]["story"][:30])])  # cut inside record 5
    r = run("import", shard, "--batch-size", "2")
    one_error_line(r, "truncated JSON", "record 5", "kept 4 stories", "resume at record 4")
    assert stored(database_url) == 4
    shard.write_text(whole)  # the complete shard: the rerun resumes, nothing twice
    r = run("import", shard, "--batch-size", "2")
    assert r.exit_code == 0 and "imported 3 stories" in r.output and "record 4" in r.output
    assert stored(database_url) == 7


def test_mixed_encoding_names_record_and_byte(run, database_url, tmp_path) -> None:
    stories = real_stories(120)
    parts = [s.encode("utf-8") for s in stories]
    parts[103] = stories[103].encode("latin-1", errors="replace") + " caf\xe9".encode("latin-1")
    data = b"\n<|endoftext|>\n".join(parts)
    assert data.index(b"caf\xe9") > 64 << 10  # past the part read to detect the format
    path = tmp_path / "mixed.txt"
    path.write_bytes(data)
    r = run("import", path, "--batch-size", "10")
    offset = data.index(b"caf\xe9") + 3
    one_error_line(r, "not UTF-8 text", "record 103", f"byte {offset}", "kept 100 stories")
    assert "resume at record 100" in r.output
    assert stored(database_url) == 100
    # The fixed file (same name, other size, under 1 MiB) resumes there: nothing twice.
    path.write_bytes(b"\n<|endoftext|>\n".join(s.encode("utf-8") for s in stories))
    r = run("import", path, "--batch-size", "10")
    assert r.exit_code == 0 and "imported 20 stories" in r.output and "record 100" in r.output
    assert stored(database_url) == 120
    # damage near the start is found before anything is stored
    early = tmp_path / "early.txt"
    early.write_bytes(b"\n<|endoftext|>\n".join([*parts[:2], parts[103], *parts[3:9]]))
    r = run("import", early)
    one_error_line(r, "not UTF-8 text", "record 2", "nothing was stored")
    assert stored(database_url) == 120


def test_a_file_changed_inside_what_was_kept_starts_over(run, database_url, tmp_path) -> None:
    recs = [{"story": s} for s in real_stories(6)]
    lines = [json.dumps(r) for r in recs]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join([*lines[:3], lines[3][:-9], *lines[4:]]) + "\n")
    r = run("import", path, "--batch-size", "2")
    one_error_line(r, "record 3", "kept 2 stories", "resume at record 2")
    # Record 0 edited as well as record 3 fixed: the kept stories are not this file's start.
    lines[0] = json.dumps({"story": recs[0]["story"].replace(" ", "  ", 1)})
    path.write_text("\n".join(lines) + "\n")
    r = run("import", path, "--batch-size", "2")
    assert r.exit_code == 0 and "resumed at record 0" in r.output, r.output
    assert stored(database_url) == 8  # all six read again; record 1 is stored as a duplicate


@pytest.mark.parametrize(
    ("name", "make", "needle"),
    [
        ("train.txt.gz", lambda s: gzip.compress(s.encode()), "gzip-compressed"),
        ("train.txt", lambda s: gzip.compress(s.encode()), "gzip-compressed"),
        ("blob.txt", lambda s: b"\x89PNG\r\n\x1a\n\x00\x00" + s.encode(), "binary file"),
        ("words.csv", lambda s: "word,role\ncat,noun\nrun,verb\n", "unknown file type '.csv'"),
        ("words.txt", lambda s: "cat\nrun\nhappy\ndog\nsun\n" * 20, "not stories"),
        ("notes.md", lambda s: s, "unknown file type '.md'"),
        ("rows.json", lambda s: json.dumps({"story": s}), "JSON list"),
    ],
)
def test_files_that_are_not_stories_are_refused(run, database_url, tmp_path, name, make, needle):
    path = tmp_path / name
    content = make("<|endoftext|>".join(real_stories(3)))
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = run("import", path)
    one_error_line(r, name, needle, "nothing was stored")
    assert stored(database_url) == 0
    if needle in ("gzip-compressed", "binary file"):  # naming a format does not get it in
        r = run("import", path, "--format", "text")
        one_error_line(r, name, needle, "nothing was stored")


def test_megabyte_story_is_skipped_with_its_reason(run, database_url, tmp_path) -> None:
    stories = real_stories(4)
    huge = ("Tom had a big red ball and he liked to play. " * 120_000).strip()  # 5.4 MB
    path = tmp_path / "train.txt"
    path.write_text("\n<|endoftext|>\n".join([stories[0], huge, *stories[1:]]), encoding="utf-8")
    r = run("import", path)
    assert r.exit_code == 0, r.output
    assert "skipped stories longer than 16384 characters (records 1" in r.output
    assert "imported 4 stories" in r.output and "skipped 1" in r.output
    assert stored(database_url) == 4
    # the limit is an option: a lower one skips real stories too, and says which
    small = tmp_path / "small.txt"
    five = real_stories(10)[5:]
    small.write_text("\n<|endoftext|>\n".join(five), encoding="utf-8")
    limit = sorted(map(len, five))[2]
    r = run("import", small, "--max-chars", limit)
    assert r.exit_code == 0 and f"skipped stories longer than {limit} characters" in r.output
    assert "imported 3 stories" in r.output and "skipped 2" in r.output


def test_unknown_fields_are_one_warning_line(run, database_url) -> None:
    """A real JSONL with the recipe at the top level and archive annotations: the recipe is
    read, the annotations are named once, with how many records carried them."""
    r = run("import", DATA / "all_data_recipes_sample_vamp.jsonl")
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "fields not imported" in warnings[0]
    assert "archive_member (32 records)" in warnings[0] and "story_sha256" in warnings[0]
    assert "imported 32 stories" in r.output
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        n = conn.execute(
            "SELECT count(*) FROM stories WHERE verb IS NOT NULL AND noun IS NOT NULL "
            "AND adjective IS NOT NULL AND model IN ('GPT-4', 'GPT-3.5')"
        ).fetchone()[0]
    assert n == 32
