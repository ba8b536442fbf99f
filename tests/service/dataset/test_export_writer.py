"""Export directory: DatasetDict, parquet shards, release-format files, card and manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psutil
import pytest
import yaml

from service.dataset.decontam import Decontaminator
from service.dataset.export_shards import COLUMNS, RELEASE_NAMES, SEPARATOR, SPLITS
from service.dataset.export_writer import ExportError, ExportWriter, split_of
from service.dataset.import_formats import iter_stories
from service.dataset.minhash import text_hash

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def real() -> list[str]:
    text = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()][:300]


def make_rows(stories: list[str]) -> list[dict]:
    rows = []
    for i, s in enumerate(stories):
        header = f"Summary: story number {i}.\nWords: run, dog, big\nFeatures: Dialogue\n"
        rows.append(
            {
                "id": f"s{i}",
                "text": s,
                "summary": f"story number {i}.",
                "instruction": header,
                "instruct_text": header + "Story: \n\n" + s,
                "verb": "run",
                "noun": "dog",
                "adjective": "big",
                "features": ["Dialogue"],
                "model": "gpt-4" if i % 3 else "gpt-3.5",
                "provider": "simulator",
                "source": "generated",
                "cost_usd": 0.002,
                "dedup_cluster": "s0" if i == 5 else None,
                "dedup_status": "near_duplicate" if i == 5 else "unique",
                "story_hash": text_hash(s),
                "prompt": f"Write a short story {i}",
            }
        )
    return rows


@pytest.fixture(scope="module")
def export(tmp_path_factory, real):
    out = tmp_path_factory.mktemp("exp") / "out"
    progress: list[tuple[int, int | None]] = []
    rows = make_rows(real)
    rows.append(
        dict(rows[1], id="leak", text=Decontaminator().prompts[0] + " The end.", story_hash=None)
    )
    res = ExportWriter(
        out,
        validation_fraction=0.2,
        seed=7,
        shard_rows=100,
        json_records_per_file=120,
        decontaminator=Decontaminator(),
        on_progress=lambda d, t: progress.append((d, t)),
        progress_every=100,
    ).write(
        iter(rows),
        total=len(rows),
        metadata={"template_versions": ["v1"], "dedup": {"threshold": 0.3}},
    )
    return out, res, progress


def test_load_from_disk_and_parquet(export, tmp_path):
    from datasets import load_dataset, load_from_disk

    out, res, _ = export
    dd = load_from_disk(str(out))
    assert set(dd) == {"train", "validation"}
    assert set(dd["train"].column_names) == set(COLUMNS)
    assert len(dd["train"]) + len(dd["validation"]) == 300
    assert res.counts == {
        "train": len(dd["train"]),
        "validation": len(dd["validation"]),
        "total": 300,
        "read": 301,
        "excluded_contaminated": 1,
    }
    assert 30 < len(dd["validation"]) < 90
    row = dd["train"][0]
    assert row["features"] == ["Dialogue"] and row["cost_usd"] == pytest.approx(0.002)
    pq = load_dataset("parquet", data_dir=str(out / "parquet"), cache_dir=str(tmp_path / "c"))
    assert len(pq["train"]) == len(dd["train"]) and len(pq["validation"]) == len(dd["validation"])
    shards = sorted(p.name for p in (out / "parquet").glob("train-*"))
    n = len(shards)
    assert n >= 2 and shards[0] == f"train-00000-of-{n:05d}.parquet"


def test_split_is_stable_by_story_hash(export, real, tmp_path):
    out, res, _ = export
    from datasets import load_from_disk

    val = set(load_from_disk(str(out))["validation"]["story_hash"])
    for h in list(val)[:10]:
        assert split_of(h, seed=7, validation_fraction=0.2) == "validation"
    # re-export of the same rows: same split, same fingerprint
    again = ExportWriter(
        tmp_path / "again",
        validation_fraction=0.2,
        seed=7,
        json_records_per_file=120,
        decontaminator=Decontaminator(),
    ).write(make_rows(real))
    assert again.fingerprint == res.fingerprint
    assert set(load_from_disk(str(tmp_path / "again"))["validation"]["story_hash"]) == val
    # more stories later: existing stories keep their split
    bigger = ExportWriter(tmp_path / "bigger", validation_fraction=0.2, seed=7).write(
        make_rows([*real, "A brand new story about a cat and a hat."])
    )
    assert bigger.fingerprint != res.fingerprint
    assert val <= set(load_from_disk(str(tmp_path / "bigger"))["validation"]["story_hash"])


def test_release_files_read_back_with_importer(export):
    from datasets import load_from_disk

    out, _, _ = export
    dd = load_from_disk(str(out))
    ts = out / "tinystories"
    train_txt = (ts / "TinyStories-train.txt").read_text(encoding="utf-8")
    # byte layout of the release: story, newline, separator, newline
    assert train_txt == "".join(f"{t}\n<|endoftext|>\n" for t in dd["train"]["text"])
    assert [s.text for s in iter_stories(ts / "TinyStories-valid.txt")] == dd["validation"]["text"]
    inst = list(iter_stories(ts / "TinyStoriesInstruct-train.txt"))
    assert [s.text for s in inst] == dd["train"]["text"]
    assert inst[0].words == ("run", "dog", "big") and inst[0].features == ("Dialogue",)
    assert inst[0].summary == dd["train"][0]["summary"]
    shards = sorted((ts / "TinyStories_all_data").glob("data*.json"))
    # data00.json: the validation split (llama2.c's test shard); train in 120-record files
    assert [p.name for p in shards] == ["data00.json", "data01.json", "data02.json"]
    assert [s.text for s in iter_stories(shards[0])] == dd["validation"]["text"]
    assert [s.text for p in shards[1:] for s in iter_stories(p)] == dd["train"]["text"]
    assert len(list(iter_stories(shards[1]))) == 120
    recs = [r for p in shards for r in iter_stories(p)]
    assert len(recs) == 300
    first = next(r for r in recs if r.text == dd["train"][0]["text"])
    i = int(dd["train"][0]["id"][1:])
    assert first.prompt == f"Write a short story {i}" and first.words == ("run", "dog", "big")
    assert {r.source for r in recs} == {"gpt-4", "gpt-3.5"}
    raw = json.loads(shards[0].read_text(encoding="utf-8"))[0]
    assert set(raw) == {"story", "instruction", "summary", "source", "instruct_header"}
    assert set(raw["instruction"]) == {"prompt:", "words", "features"}


def test_card_and_manifest(export):
    out, res, progress = export
    manifest = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == 1 and manifest["fingerprint"] == res.fingerprint
    assert manifest["counts"]["total"] == 300
    card = (out / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["counts"]["excluded_contaminated"] == 1
    assert front["decontamination"]["excluded"] == 1 and front["decontamination"]["n"] == 10
    assert front["models"] == {"gpt-4": 200, "gpt-3.5": 100}
    assert front["cost_usd"] == pytest.approx(0.6)
    assert front["dedup"]["near_duplicates_exported"] == 1 and front["dedup"]["threshold"] == 0.3
    words = front["token_stats"]["words_per_story"]
    assert 100 < words["mean"] < 300 and words["min"] <= words["median"] <= words["max"]
    assert front["template_versions"] == ["v1"]
    assert progress[0] == (100, 301) and progress[-1] == (301, 301)


def test_bad_options(tmp_path):
    for frac in (0, 1, 1.5, -0.1):
        with pytest.raises(ExportError, match="validation_fraction"):
            ExportWriter(tmp_path / "x", validation_fraction=frac, seed=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(ExportError, match="not an empty directory"):
        ExportWriter(tmp_path / "full", validation_fraction=0.1, seed=1)
    with pytest.raises(ExportError, match="fmt"):
        ExportWriter(tmp_path / "y", validation_fraction=0.1, seed=1, fmt="csv")  # type: ignore[arg-type]


def test_failed_export_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    rows = [{"text": "a fine story about a dog"}, {"text": ""}]
    with pytest.raises(ExportError, match="'text'"):
        ExportWriter(out, validation_fraction=0.5, seed=1, batch_rows=1).write(rows)
    assert not out.exists()
    with pytest.raises(ExportError, match="only 1 story to export: a dataset needs at least 2"):
        ExportWriter(out, validation_fraction=0.01, seed=1).write([{"text": "one story only"}])
    assert not out.exists()
    two = [{"text": "a first story"}, {"text": "a second story"}]
    with pytest.raises(ExportError, match="the validation split would be empty"):
        ExportWriter(out, validation_fraction=0.01, seed=1).write(two)
    assert not out.exists()


def test_an_empty_export_names_what_was_left_out(tmp_path, real):
    from service.dataset.export_writer import EmptyExportError

    with pytest.raises(EmptyExportError) as none:
        ExportWriter(tmp_path / "a", validation_fraction=0.5, seed=1).write([])
    assert str(none.value) == "no stories match the export filters"
    assert none.value.describe(12, {"repetition": 7, "too_short": 4, "empty": 1, "refusal": 1}) == (
        "no accepted stories: all 12 were rejected (repetition 7, too_short 4, empty 1); "
        "--include-rejected exports them with their checks"
    )
    # A story that repeats an evaluation prompt is left out when decontaminating.
    leak = Decontaminator().prompts[0] + " The end."
    with pytest.raises(EmptyExportError) as contaminated:
        ExportWriter(
            tmp_path / "b", validation_fraction=0.5, seed=1, decontaminator=Decontaminator()
        ).write([{"text": leak}, {"text": real[0]}])
    assert str(contaminated.value).startswith(
        "only 1 story to export (1 left out as overlapping the evaluation prompts "
        "(--no-decontaminate keeps them)): "
    )
    assert contaminated.value.describe(3, {"too_short": 3}).startswith(
        "only 1 accepted story to export (3 rejected (too_short 3); 1 left out as overlapping"
    )


def test_memory_bounded_for_many_rows(tmp_path):
    proc = psutil.Process()
    n = 50_000
    rows = (
        {"id": str(i), "text": f"Tom saw a dog number {i}. The dog was happy.", "model": "m"}
        for i in range(n)
    )
    writer = ExportWriter(
        tmp_path / "big", validation_fraction=0.05, seed=1, shard_rows=20_000, batch_rows=1_000
    )
    before = proc.memory_info().rss
    res = writer.write(rows)
    grown = proc.memory_info().rss - before
    assert res.counts["total"] == n
    assert writer.max_buffered <= 1_000  # rows are held in small batches only
    assert len(list((tmp_path / "big" / "parquet").glob("train-*"))) == 3
    assert grown < 200 * 2**20


def test_saved_dataset_is_what_save_to_disk_writes(export, real, tmp_path):
    """The streamed Arrow files + JSON load back to exactly the written rows, in the layout
    datasets' own save_to_disk produces for the same data."""
    import pyarrow as pa
    from datasets import Dataset, DatasetDict, load_from_disk

    out, _, _ = export
    dd = load_from_disk(str(out))
    expected: dict[str, list[dict]] = {"train": [], "validation": []}
    for row in make_rows(real):
        split = split_of(row["story_hash"], seed=7, validation_fraction=0.2)
        expected[split].append({c: row[c] for c in COLUMNS})
    for s in ("train", "validation"):
        assert dd[s].to_list() == expected[s]
        assert dd[s].split == s
    n = len(list((out / "parquet").glob("train-*.parquet")))
    state = json.loads((out / "train" / "state.json").read_text(encoding="utf-8"))
    assert [f["filename"] for f in state["_data_files"]] == [
        f"data-{i:05d}-of-{n:05d}.arrow" for i in range(n)
    ]
    assert sorted(p.name for p in (out / "train").glob("*.arrow")) == [
        f["filename"] for f in state["_data_files"]
    ]

    ref_dir = tmp_path / "ref"
    DatasetDict(
        {s: Dataset.from_list(expected[s], features=dd[s].features, split=s) for s in expected}
    ).save_to_disk(str(ref_dir))
    assert json.loads((out / "dataset_dict.json").read_text(encoding="utf-8")) == json.loads(
        (ref_dir / "dataset_dict.json").read_text(encoding="utf-8")
    )
    for s in ("train", "validation"):
        ours = (out / s / "dataset_info.json").read_text(encoding="utf-8")
        assert ours == (ref_dir / s / "dataset_info.json").read_text(encoding="utf-8")
        ours_state = json.loads((out / s / "state.json").read_text(encoding="utf-8"))
        ref_state = json.loads((ref_dir / s / "state.json").read_text(encoding="utf-8"))
        for k in ("_data_files", "_fingerprint"):
            ours_state.pop(k), ref_state.pop(k)
        assert ours_state == ref_state
        with pa.memory_map(str(next((ref_dir / s).glob("*.arrow")))) as f:
            ref_schema = pa.ipc.open_stream(f).schema
        for path in (out / s).glob("*.arrow"):
            with pa.memory_map(str(path)) as f:
                assert pa.ipc.open_stream(f).schema.equals(ref_schema, check_metadata=True)


def test_rejected_stories_are_listed_beside_each_release_text_file(tmp_path, real):
    import datasets

    from trainer.data import drop_rejected, load_export  # the trainer's and grader's reader

    rows = make_rows(real[:80])
    for i, row in enumerate(rows):
        row["accepted"] = i % 5 != 2
        row["rejections"] = [] if row["accepted"] else ["too_short"]

    def export(name: str, with_checks: bool):
        return ExportWriter(
            tmp_path / name, validation_fraction=0.25, seed=3, with_checks=with_checks
        ).write(iter(rows))

    plain, checked = export("plain", False), export("checked", True)
    # The check columns are content: a story judged again changes the fingerprint.
    assert export("again", True).fingerprint == checked.fingerprint
    rows[0]["accepted"], rows[0]["rejections"] = False, ["too_short"]
    assert export("rejudged", True).fingerprint != checked.fingerprint
    rows[0]["accepted"], rows[0]["rejections"] = True, []
    # Without rejected stories: nothing beside the text files, and the fingerprint as before.
    assert plain.fingerprint == "2bf77a429c01ca30e9ceb96cc566620813663d32fe8b3d17a2531a633167fee3"
    assert not list(plain.out_dir.rglob("*.rejected.json"))
    assert "rejected_stories" not in plain.manifest
    assert "rejected" not in (plain.out_dir / "README.md").read_text(encoding="utf-8")
    # With them, the release files are byte for byte the same, each with its list beside it.
    release = checked.out_dir / "tinystories"
    per_split = {}
    for split in SPLITS:
        for name, col in zip(RELEASE_NAMES[split], ("text", "instruct_text"), strict=True):
            data = (release / name).read_bytes()
            assert data == (plain.out_dir / "tinystories" / name).read_bytes()
            stories = [s.strip() for s in data.decode().split(SEPARATOR) if s.strip()]
            failed = {r[col].strip() for r in rows if not r["accepted"]}
            expected = [i for i, s in enumerate(stories) if s in failed]
            listing = json.loads((release / name.replace(".txt", ".rejected.json")).read_text())
            assert listing == {
                "format": "tinystories-rejected",
                "version": 1,
                "stories": len(stories),
                "sha256": hashlib.sha256(data).hexdigest(),
                "rejected": expected,
            }
            per_split[split] = len(expected)
    assert all(per_split.values()) and sum(per_split.values()) == 16
    assert checked.manifest["rejected_stories"] == per_split
    listed = [f for f in checked.manifest["files"] if f.endswith(".rejected.json")]
    assert listed == [
        "tinystories/TinyStories-train.rejected.json",
        "tinystories/TinyStoriesInstruct-train.rejected.json",
        "tinystories/TinyStories-valid.rejected.json",
        "tinystories/TinyStoriesInstruct-valid.rejected.json",
    ]
    card = (checked.out_dir / "README.md").read_text(encoding="utf-8")
    assert yaml.safe_load(card.split("---\n")[1])["rejected_stories"] == per_split
    assert "`tinystories/*.rejected.json`" in card
    # The trainer leaves out of the text files what it leaves out of the dataset.
    texts, counts = drop_rejected(load_export(release), include=False)
    assert counts == per_split
    dd = datasets.load_from_disk(str(checked.out_dir))
    for split in SPLITS:
        accepted = [t for t, ok in zip(dd[split]["text"], dd[split]["accepted"], strict=True) if ok]
        assert texts[split].texts == accepted
