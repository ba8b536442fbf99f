"""Streaming readers for the TinyStories release formats, on real release data."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from service.dataset.import_formats import (
    ImportFormatError,
    detect_format,
    iter_stories,
)

DATA = Path(__file__).parents[1] / "data"
TRAIN = DATA / "TinyStories-train-sample1200.txt"
INSTRUCT = DATA / "TinyStoriesInstruct-valid_first2records.txt"
RECORDS = DATA / "all_data_records_full_sample.jsonl"


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    """A TinyStories_all_data shard (top-level JSON list) made of the real records."""
    recs = [json.loads(line) for line in RECORDS.read_text(encoding="utf-8").splitlines()]
    for r in recs:
        r.pop("_meta", None)
    path = tmp_path / "data00.json"
    path.write_text(json.dumps(recs, indent=1), encoding="utf-8")
    return path


def test_text_release_file_chunk_independent():
    full = list(iter_stories(TRAIN))
    assert len(full) == 1200
    assert full[0].text.startswith("One day, a little girl named Lily found a needle in her room.")
    assert full[-1].text.endswith("all by himself.")
    assert [s.line_or_record_no for s in full[:3]] == [0, 1, 2]
    tiny = list(iter_stories(TRAIN, "text", chunk_bytes=97))  # separators split across chunks
    assert [s.text for s in tiny] == [s.text for s in full]
    assert full[-1].end_offset == TRAIN.stat().st_size - 1  # only the final newline remains


def test_text_resume_from_position():
    full = list(iter_stories(TRAIN))
    last = full[699]
    rest = list(iter_stories(TRAIN, start_record=700, start_offset=last.end_offset))
    assert rest == full[700:]


def test_instruct_records_parsed():
    assert detect_format(INSTRUCT) == "instruct"
    recs = list(iter_stories(INSTRUCT))
    assert len(recs) == 2
    a, b = recs
    assert a.features == ("Dialogue",)
    assert a.words == ("quit", "oak", "gloomy")
    assert a.summary.startswith("Sara and Ben were playing in the park")
    assert a.text.startswith("Sara and Ben were playing in the park. They liked to climb")
    assert b.features == ("Dialogue", "BadEnding", "MoralValue")
    assert b.words == ("ride", "work", "upset")
    assert b.instruction_text.splitlines()[0].startswith("Summary: Lily steals a new bike")
    # header + marker + story reproduces the record exactly as released
    raw = INSTRUCT.read_text(encoding="utf-8").split("<|endoftext|>")[1].strip("\n")
    assert b.instruction_text + "Story: \n\n" + b.text == raw


def test_json_shard_streamed(shard: Path):
    assert detect_format(shard) == "json"
    recs = list(iter_stories(shard, chunk_bytes=64))
    assert len(recs) == 3
    first = recs[0]
    assert first.text.startswith("Lily and Ben are friends.")
    assert first.words == ("hang", "foot", "cute")
    assert first.features == ("Dialogue",)
    assert first.source == "GPT-4"
    assert first.prompt.startswith("Write a short story (3-5 paragraphs)")
    assert "Lily falls off the swing" in first.summary
    assert [r.line_or_record_no for r in recs] == [0, 1, 2]
    assert list(iter_stories(shard, start_record=2)) == recs[2:]


def test_truncated_json_shard_names_file_and_position(shard: Path, tmp_path: Path):
    data = shard.read_bytes()
    cut = tmp_path / "data01.json"
    second = data.index(b'"story"', data.index(b'"story"') + 1)
    cut.write_bytes(data[: second + 200])
    with pytest.raises(ImportFormatError) as err:
        list(iter_stories(cut))
    e = err.value
    assert e.path == str(cut)
    assert e.record_no == 1  # record 0 was complete
    assert e.byte_offset is not None and 0 < e.byte_offset <= second + 200
    assert "truncated" in str(e) and "data01.json" in str(e)


def test_jsonl_and_bad_line(tmp_path: Path):
    assert detect_format(RECORDS) == "jsonl"
    recs = list(iter_stories(RECORDS))
    assert len(recs) == 3 and recs[0].words == ("hang", "foot", "cute")
    bad = tmp_path / "bad.jsonl"
    lines = RECORDS.read_text(encoding="utf-8").splitlines()
    bad.write_text(lines[0] + "\n\n" + lines[1][:50] + "\n", encoding="utf-8")
    with pytest.raises(ImportFormatError) as err:
        list(iter_stories(bad))
    assert err.value.record_no == 1 and "invalid JSON line" in str(err.value)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.txt", b"", "empty"),
        ("blob.bin", b"\x00\x01\x02 data", "binary"),
        ("notes.txt", b"just words with no separator " * 4000, "unknown format"),
        ("obj.json", b'{"story": "x"}', "JSON list"),
    ],
)
def test_unknown_formats_rejected(tmp_path: Path, name: str, content: bytes, reason: str):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImportFormatError) as err:
        detect_format(path)
    assert name in str(err.value) and reason in str(err.value)


def test_bad_instruct_record_named(tmp_path: Path):
    path = tmp_path / "instruct.txt"
    path.write_text(
        "Words: a, b\nStory: \n\nok story\n<|endoftext|>\nWords: x\nno story here\n<|endoftext|>\n",
        encoding="utf-8",
    )
    with pytest.raises(ImportFormatError) as err:
        list(iter_stories(path, "instruct"))
    assert err.value.record_no == 1


def test_streaming_memory_is_bounded(tmp_path: Path):
    story = TRAIN.read_text(encoding="utf-8").split("<|endoftext|>")[0].strip()
    path = tmp_path / "big.txt"
    with path.open("w", encoding="utf-8") as f:
        for i in range(8000):  # ~7 MB
            f.write(f"{story} {i}\n<|endoftext|>\n")
    tracemalloc.start()
    n = sum(1 for _ in iter_stories(path, chunk_bytes=64 << 10))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 8000
    assert peak < 1_000_000  # a few chunks, never the whole 7 MB file


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("source", ["text", "instruct", "jsonl", "json"])
def test_byte_order_mark_is_skipped_and_offsets_stay_file_offsets(
    source: str, shard: Path, tmp_path: Path
):
    """A file saved "UTF-8 with BOM" reads as the same records as without it; the offsets a
    resumed import seeks to are those of the file, BOM included."""
    plain = {"text": TRAIN, "instruct": INSTRUCT, "jsonl": RECORDS, "json": shard}[source]
    marked = tmp_path / f"bom{plain.suffix}"
    marked.write_bytes(BOM + plain.read_bytes())
    assert detect_format(marked) == detect_format(plain) == source
    want, got = list(iter_stories(plain)), list(iter_stories(marked))
    assert [s.text for s in got] == [s.text for s in want] and len(got) >= 2
    assert not got[0].text.startswith("\ufeff")
    assert [(s.words, s.summary, s.instruction_text) for s in got] == [
        (s.words, s.summary, s.instruction_text) for s in want
    ]
    if source in ("text", "instruct", "jsonl"):  # byte-seekable: resume after record 0
        assert [s.end_offset for s in got] == [s.end_offset + len(BOM) for s in want]
        rest = list(iter_stories(marked, start_record=1, start_offset=got[0].end_offset))
        assert rest == got[1:]
    else:
        assert list(iter_stories(marked, start_record=1)) == got[1:]


def test_byte_order_mark_only_at_the_start(tmp_path: Path):
    """Only byte 0 is a BOM: one inside a story is the story's, an empty file stays empty."""
    a, b = TRAIN.read_bytes().split(b"<|endoftext|>")[:2]
    path = tmp_path / "train.txt"
    path.write_bytes(BOM + a.strip() + b"\n<|endoftext|>\n" + BOM + b.strip() + b"\n")
    got = [s.text for s in iter_stories(path)]
    assert got == [a.decode().strip(), "\ufeff" + b.decode().strip()]
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(BOM + b"\n")
    with pytest.raises(ImportFormatError, match="file is empty"):
        detect_format(empty)
