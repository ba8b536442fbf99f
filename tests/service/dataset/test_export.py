"""Export through the CLI and the API: filters, stable split, archive, 422s."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import uuid
from pathlib import Path

import datasets
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from service.dataset.export_writer import ExportError
from service.dataset.exporter import ExportOptions, run_export
from service.dataset.importer import import_file

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


def _cli(url: str, monkeypatch: pytest.MonkeyPatch, *args: str):
    import typer

    from service.dataset import cli as dataset_cli

    monkeypatch.setenv("DATABASE_URL", url)
    app = typer.Typer()
    dataset_cli.register(app)
    app.command("noop", hidden=True)(lambda: None)
    return CliRunner().invoke(app, list(args))


def test_cli_export_is_loadable_and_stable(seeded: str, tmp_path: Path, monkeypatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    r = _cli(seeded, monkeypatch, "export", "--out", str(a), "--validation-fraction", "0.2")
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
    # Re-export: same split, same fingerprint.
    r2 = _cli(seeded, monkeypatch, "export", "--out", str(b), "--validation-fraction", "0.2")
    assert r2.exit_code == 0, r2.output
    dd2 = datasets.load_from_disk(str(b))
    assert sorted(dd2["validation"]["id"]) == sorted(dd["validation"]["id"])
    assert json.loads((b / "export.json").read_text())["fingerprint"] == manifest["fingerprint"]


def test_cli_export_bad_input(seeded: str, tmp_path: Path, monkeypatch) -> None:
    r = _cli(
        seeded, monkeypatch, "export", "--out", str(tmp_path / "x"), "--job", str(uuid.uuid4())
    )
    assert r.exit_code == 2 and "jobs" in r.output and r.output.count("\n") == 1
    r = _cli(
        seeded, monkeypatch, "export", "--out", str(tmp_path / "y"), "--validation-fraction", "1"
    )
    assert r.exit_code == 2 and "validation_fraction" in r.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


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
