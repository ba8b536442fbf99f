"""POST /v1/exports writes where the trainer and grader jobs read: TINYSTORIES_EXPORT_DIR,
with `latest` pointing at the newest finished export."""

from __future__ import annotations

import asyncio
from pathlib import Path

import datasets
import httpx
import pytest_asyncio

from service.api import create_app
from tests.service.conftest import TEST_TOKEN

DATA = Path(__file__).parents[1] / "data"


@pytest_asyncio.fixture
async def api_with_export_dir(settings, tmp_path: Path):
    settings = settings.model_copy(update={"export_dir": tmp_path / "export"})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://test",
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        ) as client:
            yield client, settings


async def _export(api: httpx.AsyncClient, seed: int) -> str:
    r = await api.post("/v1/exports", json={"validation_fraction": 0.2, "seed": seed})
    assert r.status_code == 202, r.text
    export_id = r.json()["id"]
    while True:  # the export makes progress or fails; it never sits still for long
        body = (await api.get(f"/v1/exports/{export_id}")).json()
        if body["status"] in ("completed", "failed"):
            assert body["status"] == "completed", body
            return export_id
        await asyncio.sleep(0.1)


async def test_exports_land_in_the_shared_location_with_latest(
    api_with_export_dir, database_url: str, tmp_path: Path
) -> None:
    from service.dataset.importer import import_file
    from service.db import make_engine, make_sessionmaker

    api, settings = api_with_export_dir
    stories = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    sample = tmp_path / "sample.txt"
    sample.write_text("<|endoftext|>".join(stories.split("<|endoftext|>")[:40]))
    engine = make_engine(database_url, pool_size=2)
    try:
        await import_file(make_sessionmaker(engine), sample)
    finally:
        await engine.dispose()

    root = tmp_path / "export"
    first = await _export(api, seed=1)
    latest = root / "latest"
    assert latest.is_symlink() and latest.resolve() == (root / first).resolve()
    second = await _export(api, seed=2)
    assert latest.resolve() == (root / second).resolve()
    # What the trainer job reads as --data /export/latest is a complete saved dataset.
    loaded = datasets.load_from_disk(str(latest))
    assert loaded["train"].num_rows + loaded["validation"].num_rows == 40
    assert not (Path(settings.home) / "exports").exists()
