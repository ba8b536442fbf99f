"""Export through the CLI and the API: filters, stable split, archive, 422s."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import tarfile
import uuid
from collections import Counter
from pathlib import Path

import datasets
import pytest
from sqlalchemy import text

from service.dataset.export_writer import ExportError
from service.dataset.exporter import ExportOptions, run_export
from service.dataset.importer import import_file
from tests.service.dataset.cli_runner import dataset_cli

DATA = Path(__file__).parents[1] / "data"
JOB_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


async def _seed(url: str, tmp_path: Path) -> None:
    """The real 1,200-story sample (imported), a planted duplicate, one job with 3 stories."""
    from service.db import make_engine, make_sessionmaker

    engine = make_engine(url, pool_size=2)
    sm = make_sessionmaker(engine)
    src = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    stories = [s for s in src.split("<|endoftext|>") if s.strip()]
    sample = tmp_path / "sample.txt"
    sample.write_text("<|endoftext|>".join([*stories[:300], stories[10].upper()]))
    await import_file(sm, sample)
    async with sm() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO jobs (id, n_stories, models, template_version, max_tokens, seed, "
                "budget_usd, provider) VALUES (:id, 3, '[]', 'v1', 400, 0, 1, 'simulator')"
            ),
            {"id": JOB_ID},
        )
        for i, story in enumerate(stories[400:403]):
            await session.execute(
                text(
                    "INSERT INTO stories (job_id, text, accepted, text_hash, model, provider, "
                    "cost_usd, verb, noun, adjective, features) VALUES (:j, :t, :a, :h, "
                    "'simulator-story-1', 'simulator', 0.002, 'run', 'dog', 'happy', "
                    "'[\"Dialogue\"]')"
                ),
                {"j": JOB_ID, "t": story, "a": i != 2, "h": f"h{i}"},
            )
    await engine.dispose()


@pytest.fixture
def seeded(database_url: str, tmp_path: Path) -> str:
    asyncio.run(_seed(database_url, tmp_path))
    return database_url


def test_cli_export_is_loadable_and_stable(
    seeded: str, tmp_path: Path, monkeypatch, caplog
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    r = dataset_cli(seeded, monkeypatch, "export", "--out", str(a), "--validation-fraction", "0.2")
    assert r.exit_code == 0, r.output
    assert "exported 302 stories" in r.output  # 301 unique + 2 accepted job stories - 1 dup
    dd = datasets.load_from_disk(str(a))
    assert dd["train"].num_rows + dd["validation"].num_rows == 302
    assert 30 < dd["validation"].num_rows < 95
    pq = datasets.load_dataset("parquet", data_dir=str(a / "parquet"))
    assert pq["train"].num_rows == dd["train"].num_rows
    assert (a / "tinystories" / "TinyStories-valid.txt").read_text().count("<|endoftext|>") > 0
    card = (a / "README.md").read_text()
    assert card.startswith("---") and "duplicate_rate" in card
    manifest = json.loads((a / "export.json").read_text())
    assert manifest["dedup"]["exact_duplicates"] == 1 and manifest["dedup"]["params"]["bands"]
    assert manifest["provenance"]["jobs"] == [str(JOB_ID)]
    # Re-export with the analysis in its worker process (forced: 302 stories are too few for
    # auto): same split, same fingerprint.
    monkeypatch.setenv("TINYSTORIES_EXPORT_WORKER", "on")
    with caplog.at_level(logging.INFO, logger="service.dataset.export_writer"):
        r2 = dataset_cli(
            seeded, monkeypatch, "export", "--out", str(b), "--validation-fraction", "0.2"
        )
    assert r2.exit_code == 0, r2.output
    assert "analysis=worker" in caplog.text
    dd2 = datasets.load_from_disk(str(b))
    assert sorted(dd2["validation"]["id"]) == sorted(dd["validation"]["id"])
    assert json.loads((b / "export.json").read_text())["fingerprint"] == manifest["fingerprint"]


def test_cli_export_bad_input(seeded: str, tmp_path: Path, monkeypatch) -> None:
    r = dataset_cli(
        seeded, monkeypatch, "export", "--out", str(tmp_path / "x"), "--job", str(uuid.uuid4())
    )
    assert r.exit_code == 2 and "jobs" in r.output and r.output.count("\n") == 1
    r = dataset_cli(
        seeded, monkeypatch, "export", "--out", str(tmp_path / "y"), "--validation-fraction", "1"
    )
    assert r.exit_code == 2 and "validation_fraction" in r.output
    monkeypatch.setenv("TINYSTORIES_EXPORT_WORKER", "sometimes")
    r = dataset_cli(seeded, monkeypatch, "export", "--out", str(tmp_path / "z"))
    assert r.exit_code != 0 and "EXPORT_WORKER" in r.output.upper(), r.output
    assert r.output.strip().count("\n") == 0, r.output
    for name in "xyz":
        assert not (tmp_path / name).exists()


def test_filters(seeded: str, tmp_path: Path) -> None:
    job_only = run_export(
        seeded,
        tmp_path / "job",
        ExportOptions(jobs=[JOB_ID], validation_fraction=0.5, seed=4, include_rejected=True),
    )
    assert job_only.counts["total"] == 3
    # Seed 0 puts both accepted job stories in validation: a clear error, no directory.
    with pytest.raises(ExportError, match="split would be empty"):
        run_export(seeded, tmp_path / "one", ExportOptions(jobs=[JOB_ID], validation_fraction=0.5))
    dups = run_export(
        seeded,
        tmp_path / "dups",
        ExportOptions(models=None, include_duplicates=True, validation_fraction=0.2),
    )
    assert dups.counts["total"] == 303
    ds = datasets.load_from_disk(str(tmp_path / "dups"))
    clusters = [c for s in ("train", "validation") for c in ds[s]["dedup_cluster"] if c]
    assert len(clusters) == 1
    by_model = run_export(
        seeded,
        tmp_path / "model",
        ExportOptions(
            models=["simulator-story-1"], include_rejected=True, validation_fraction=0.5, seed=4
        ),
    )
    assert by_model.counts["total"] == 3


async def _wait(api, export_id: str) -> dict:
    for _ in range(300):
        body = (await api.get(f"/v1/exports/{export_id}")).json()
        if body["status"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError("export did not finish")


async def test_api_export_download(api, database_url: str, tmp_path: Path) -> None:
    await _seed(database_url, tmp_path)
    r = await api.post("/v1/exports", json={"validation_fraction": 0.3, "seed": 7})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    body = await _wait(api, r.json()["id"])
    assert body["status"] == "completed", body
    assert body["progress"] == 1 and body["counts"]["total"] == 302
    dl = await api.get(f"/v1/exports/{body['id']}/download")
    assert dl.status_code == 200 and dl.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(dl.content), mode="r:gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    (root,) = (tmp_path / "x").iterdir()
    dd = datasets.load_from_disk(str(root))
    assert dd["train"].num_rows + dd["validation"].num_rows == 302
    stats = (await api.get("/v1/stats/duplicates")).json()
    # The export checked the job's two accepted stories that no indexer had reached.
    assert stats["duplicates"] == 1 and stats["checked"] == 303


async def test_api_export_errors(api) -> None:
    r = await api.post("/v1/exports", json={"jobs": [str(uuid.uuid4())]})
    assert r.status_code == 422 and r.json()["field"] == "jobs"
    r = await api.post("/v1/exports", json={"validation_fraction": 0})
    assert r.status_code == 422 and r.json()["field"] == "validation_fraction"
    r = await api.get(f"/v1/exports/{uuid.uuid4()}")
    assert r.status_code == 404


def _job_with(url: str, stories: list[tuple[bool, list[str]]]) -> str:
    """A job whose stories passed (True) or failed the named checks, as the workers store them."""
    import psycopg

    job_id = uuid.uuid4()
    src = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    texts = [s.strip() for s in src.split("<|endoftext|>") if s.strip()][600:]
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(
            "INSERT INTO jobs (id, n_stories, models, template_version, max_tokens, seed, "
            "budget_usd, provider) VALUES (%s, %s, '[]', 'v1', 400, 0, 1, 'openai')",
            (job_id, len(stories)),
        )
        for i, (accepted, reasons) in enumerate(stories):
            conn.execute(
                "INSERT INTO stories (job_id, text, accepted, rejection_reasons, text_hash, "
                "model, provider) VALUES (%s, %s, %s, %s::jsonb, %s, 'llama-local', 'openai')",
                (job_id, texts[i], accepted, json.dumps(reasons), f"{job_id}-{i}"),
            )
    return str(job_id)


def test_export_of_rejected_stories_only_names_the_real_cause(
    seeded: str, tmp_path: Path, monkeypatch
) -> None:
    job = _job_with(
        seeded,
        [(False, ["repetition"])] * 7
        + [(False, ["too_short", "repetition"])] * 3
        + [(False, ["out_of_vocabulary"])] * 2,
    )
    r = dataset_cli(seeded, monkeypatch, "export", "--out", str(tmp_path / "x"), "--job", job)
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1] == (
        "error: no accepted stories: all 12 were rejected (repetition 10, too_short 3, "
        "out_of_vocabulary 2); --include-rejected exports them with their checks"
    )
    assert not (tmp_path / "x").exists()
    # Changing validation_fraction is no help, and the message does not suggest it.
    r = dataset_cli(
        seeded, monkeypatch, "export", "--out", str(tmp_path / "y"), "--job", job,
        "--validation-fraction", "0.5",
    )  # fmt: skip
    assert r.exit_code == 1 and "validation_fraction" not in r.output


def test_export_of_one_accepted_story_says_so(seeded: str, tmp_path: Path) -> None:
    job = _job_with(seeded, [(True, [])] + [(False, ["too_short"])] * 3)
    with pytest.raises(ExportError) as caught:
        run_export(seeded, tmp_path / "one", ExportOptions(jobs=[uuid.UUID(job)]))
    assert str(caught.value) == (
        "only 1 accepted story to export (3 rejected (too_short 3)): a dataset needs at least "
        "2, one for each split"
    )


def _export_with_checks(seeded: str, monkeypatch, out: Path, job: str) -> Path:
    """`export --include-rejected` of one job into `out` (40% validation)."""
    r = dataset_cli(
        seeded, monkeypatch, "export", "--out", str(out), "--job", job, "--include-rejected",
        "--validation-fraction", "0.4",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def test_include_rejected_carries_accepted_and_rejections_in_every_format(
    seeded: str, tmp_path: Path, monkeypatch
) -> None:
    checks = [(True, []), (False, ["repetition"]), (True, []), (False, ["too_short", "empty"])]
    job = _job_with(seeded, checks * 3)
    out = _export_with_checks(seeded, monkeypatch, tmp_path / "with-checks", job)
    expected = {(True, ()): 6, (False, ("repetition",)): 3, (False, ("too_short", "empty")): 3}

    def tally(rows) -> Counter:
        return Counter((accepted, tuple(rejections)) for accepted, rejections in rows)

    def checks_of(dd) -> list:
        return [
            pair
            for split in dd.values()
            for pair in zip(split["accepted"], split["rejections"], strict=True)
        ]

    assert tally(checks_of(datasets.load_from_disk(str(out)))) == expected
    pq = datasets.load_dataset("parquet", data_dir=str(out / "parquet"))
    assert tally(checks_of(pq)) == expected
    release = out / "tinystories" / "TinyStories_all_data"
    records = [rec for f in sorted(release.glob("data*.json")) for rec in json.loads(f.read_text())]
    assert tally((rec["accepted"], rec["rejections"]) for rec in records) == expected
    # Without --include-rejected the columns are not there: every row passed.
    plain = run_export(
        seeded, tmp_path / "plain", ExportOptions(validation_fraction=0.2, jobs=None)
    )
    assert "accepted" not in datasets.load_from_disk(str(plain.out_dir))["train"].column_names


def test_include_rejected_lists_the_rejected_stories_beside_each_text_file(
    seeded: str, tmp_path: Path, monkeypatch
) -> None:
    from trainer.data import drop_rejected, load_export

    job = _job_with(seeded, [(True, []), (False, ["repetition"]), (True, []), (True, [])] * 4)
    out = _export_with_checks(seeded, monkeypatch, tmp_path / "with-checks", job)
    dd = datasets.load_from_disk(str(out))
    counts = {}
    for split, name in (("train", "TinyStories-train"), ("validation", "TinyStories-valid")):
        text = out / "tinystories" / f"{name}.txt"
        stories = [s.strip() for s in text.read_text().split("<|endoftext|>") if s.strip()]
        assert stories == dd[split]["text"]  # the same stories in the same order
        listing = json.loads((out / "tinystories" / f"{name}.rejected.json").read_text())
        expected = [i for i, ok in enumerate(dd[split]["accepted"]) if not ok]
        assert listing["rejected"] == expected and listing["stories"] == len(stories)
        counts[split] = len(expected)
    assert sum(counts.values()) == 4
    assert json.loads((out / "export.json").read_text())["rejected_stories"] == counts
    # The trainer reads the text files as it reads the dataset: rejected stories left out.
    texts, dropped = drop_rejected(load_export(out / "tinystories"), include=False)
    assert dropped == counts
    assert all(len(texts[s].texts) == dd[s].num_rows - counts[s] for s in counts)
    # Without --include-rejected every story passed: no list, as before.
    r = dataset_cli(
        seeded, monkeypatch, "export", "--out", str(tmp_path / "plain"), "--job", job,
        "--validation-fraction", "0.4",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert not list((tmp_path / "plain").rglob("*.rejected.json"))
