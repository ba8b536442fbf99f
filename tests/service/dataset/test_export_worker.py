"""The export's analysis worker: the same files as an in-process export, and clean failures."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from service.dataset.decontam import Decontaminator
from service.dataset.export_writer import ExportError, ExportWriter
from tests.service.dataset.test_export_writer import DATA, make_rows


@pytest.fixture(scope="module")
def real() -> list[str]:
    text = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()][:300]


def _tree(root: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    manifest = json.loads(files.pop("export.json"))
    manifest.pop("created_at")  # the one field two exports of the same rows do not share
    return files | {"export.json": json.dumps(manifest, sort_keys=True).encode()}


def test_worker_process_export_is_byte_identical(tmp_path, real):
    # Decontamination and the card's sketch in a second process, several batches in flight:
    # every file (parquet, Arrow, release files, card, manifest) is the in-process export's.
    rows = make_rows(real)
    leak = Decontaminator().prompts[3] + " The end."
    rows[40:40] = [dict(rows[2], id="leak", text=leak, story_hash=None)]
    outs = {}
    for worker in (False, True):
        outs[worker] = tmp_path / f"worker-{worker}"
        res = ExportWriter(
            outs[worker],
            validation_fraction=0.2,
            seed=3,
            shard_rows=70,
            json_records_per_file=90,
            batch_rows=25,  # 12 batches: the worker's results come back while rows are read
            decontaminator=Decontaminator(),
            worker=worker,
        ).write(iter(rows), total=len(rows))
        assert res.counts["excluded_contaminated"] == 1
        assert res.counts["total"] == len(rows) - 1
    assert _tree(outs[True]) == _tree(outs[False])


def test_worker_failure_fails_the_export_and_leaves_nothing(tmp_path, real):
    class Unpicklable(Decontaminator):  # the worker cannot be sent it: the export fails
        def __reduce__(self):
            raise TypeError("this decontaminator cannot travel")

    out = tmp_path / "broken"
    writer = ExportWriter(
        out, validation_fraction=0.2, seed=3, decontaminator=Unpicklable(), worker=True
    )
    with pytest.raises(TypeError, match="cannot travel"):
        writer.write(iter(make_rows(real)), total=300)
    assert not out.exists()
    workers = [c for c in psutil.Process().children() if "export_analysis" in " ".join(c.cmdline())]
    assert workers == []  # the worker started for the export is gone with it


def test_worker_stopping_mid_export_fails_it(tmp_path, real, monkeypatch):
    # A worker killed mid-export (the OOM killer, say): the export fails in one line, its
    # directory is removed, and the writer waits on nothing.
    from service.dataset import export_analysis

    started = []
    real_worker = export_analysis._Worker

    def killed_after_start(decontaminator):
        worker = real_worker(decontaminator)
        worker.proc.kill()
        started.append(worker.proc)
        return worker

    monkeypatch.setattr(export_analysis, "_Worker", killed_after_start)
    out = tmp_path / "killed"
    writer = ExportWriter(
        out, validation_fraction=0.2, seed=3, batch_rows=25, decontaminator=None, worker=True
    )
    with pytest.raises(ExportError, match=r"analysis worker stopped \(exit code -9\)"):
        writer.write(iter(make_rows(real)), total=300)
    assert not out.exists() and started[0].poll() is not None
