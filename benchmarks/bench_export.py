"""Export throughput and memory: stored stories -> dataset directory.

Seeds N stories straight in SQL (INSERT ... SELECT generate_series over the real 1,200-story
sample, each made distinct), then exports them in a child process per side and reports each
child's peak RSS above its floor: the RSS of the same child after its imports, before any work
(interpreter + pyarrow + datasets + psycopg: ~150-180 MB that any Python exporter pays), and
the peak of its anonymous (heap) memory above the same floor: RSS also counts pages of the
Arrow/parquet files a process maps, which the kernel can drop.

"ours": service.dataset.exporter.run_export (server-side cursor -> ExportWriter: parquet
shards, release text/JSON files, DatasetDict, dataset card; decontamination on), and the
same with decontamination off ("ours_no_decontam": what the 10-gram check against the
evaluation prompts costs).
"baseline_streaming": what a user fluent in these libraries would write: a psycopg server-side
cursor fetched in batches of 10,000 into a pyarrow ParquetWriter, then
`datasets.Dataset.from_parquet` + `train_test_split` + `save_to_disk` (the same train/validation
DatasetDict, without release files, card or decontamination). Both stream: memory stays flat.

    python benchmarks/bench_export.py [--quick] [--n N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "tests/service/data/TinyStories-train-sample1200.txt"
FAST_PG = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def seed(url: str, n: int) -> None:
    """N distinct stories: a real story, a numbered closing sentence, recipe words, a model mix."""
    import psycopg

    stories = [s.strip() for s in SAMPLE.read_text(encoding="utf-8").split("<|endoftext|>")]
    stories = [s for s in stories if s]
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO stories (text, accepted, text_hash, model, provider, verb, noun,
                                 adjective, features, source, dedup_status, cost_usd, summary)
            SELECT s.t || ' The ' || (ARRAY['cat','dog','sun','boat','tree'])[1 + i %% 5]
                       || ' number ' || i || ' was happy.',
                   true, md5(i::text), (ARRAY['gpt-4','gpt-3.5-turbo'])[1 + i %% 2], 'openai',
                   'run', 'dog', 'happy', '["Dialogue"]'::jsonb, 'generated', 'unique',
                   0.0012, 'A short summary ' || i || '.'
            FROM generate_series(0, %(n)s - 1) AS i
            JOIN LATERAL (SELECT (%(stories)s::text[])[1 + i %% %(k)s] AS t) s ON true
            """,
            {"n": n, "stories": stories, "k": len(stories)},
        )
        conn.execute("ANALYZE stories")


COLUMNS = (
    "id::text AS id, text, summary, verb, noun, adjective, features, model, provider, source, "
    "cost_usd::float8 AS cost_usd, text_hash"
)
BATCH = 10_000


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def anon_mb() -> float:
    """Resident anonymous memory (heap), without file pages mapped from Arrow/parquet files,
    which the kernel can drop and re-read."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


class AnonPeak:
    """Samples RssAnon every 20 ms in a thread (the kernel keeps no peak of it)."""

    def __init__(self) -> None:
        self.peak = anon_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, anon_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, anon_mb())


def streaming_baseline(url: str, out: Path) -> int:
    """Server-side cursor -> ParquetWriter -> datasets, batch by batch."""
    import datasets
    import psycopg
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    parquet = out / "stories.parquet"
    rows = 0
    text = ("id", "text", "summary", "verb", "noun", "adjective")
    schema = pa.schema(
        [(n, pa.string()) for n in text]
        + [("features", pa.list_(pa.string()))]
        + [(n, pa.string()) for n in ("model", "provider", "source")]
        + [("cost_usd", pa.float64()), ("text_hash", pa.string())]
    )
    with (
        psycopg.connect(url.replace("+psycopg", "")) as conn,
        conn.cursor(name="export") as cur,
        pq.ParquetWriter(parquet, schema) as writer,
    ):
        cur.itersize = BATCH
        cur.execute(f"SELECT {COLUMNS} FROM stories WHERE accepted ORDER BY id")
        while batch := cur.fetchmany(BATCH):
            columns = [list(c) for c in zip(*batch, strict=True)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
            rows += len(batch)
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(out / "cache"))
    ds.train_test_split(test_size=0.05, seed=0).save_to_disk(str(out / "dataset"))
    return rows


def child(mode: str, url: str, out: str) -> None:
    """Run one export in this process and print its figures as JSON."""
    import datasets  # noqa: F401  (the floor: what either side imports before it works)
    import psycopg  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    if mode.startswith("ours"):
        from service.dataset import decontam, dedup  # noqa: F401  (run_export imports them)
        from service.dataset.exporter import ExportOptions, run_export
    floor, anon_floor = rss_mb(), anon_mb()
    anon = AnonPeak()
    t0 = time.perf_counter()
    if mode.startswith("ours"):
        opts = ExportOptions(validation_fraction=0.05, seed=0, decontaminate=mode == "ours")
        result = run_export(url, out, opts)
        rows = result.counts["total"]
    else:
        rows = streaming_baseline(url, Path(out))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The export's analysis worker, a process of its own (0 when the export ran without one).
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures = {"rows": rows, "seconds": seconds, "peak_rss_mb": peak, "floor_mb": floor}
    figures["worker_peak_rss_mb"] = worker
    print(json.dumps({**figures, "anon_above_floor_mb": anon.stop() - anon_floor}))


def run_child(mode: str, url: str, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} export failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30,000 stories")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument(
        "--child", choices=("ours", "ours_no_decontam", "streaming"), help=argparse.SUPPRESS
    )
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.url, args.out)
        return
    n = args.n or (30_000 if args.quick else 200_000)

    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, ensure_database

    root = Path(tempfile.mkdtemp(prefix="bench-export-"))
    server = EmbeddedPostgres(root / "pg", extra_options=FAST_PG)
    try:
        info = server.ensure_running()
        ensure_database(info.url(driver="postgresql"), "bench")
        url = info.url("bench")
        upgrade(url)
        t0 = time.perf_counter()
        seed(url, n)
        print(f"seeded {n} stories in {time.perf_counter() - t0:.1f}s")
        print(f"load average before the exports: {load_avg()}", flush=True)
        ours = run_child("ours", url, root / "ours")
        plain = run_child("ours_no_decontam", url, root / "plain")
        base = run_child("streaming", url, root / "baseline")
        print(f"load average after the exports: {load_avg()}", flush=True)
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    for name, r in (("ours", ours), ("ours_no_decontam", plain), ("baseline_streaming", base)):
        r["above_floor_mb"] = r["peak_rss_mb"] - r["floor_mb"]
        print(
            f"{name:18s} rows={r['rows']} seconds={r['seconds']:.1f} "
            f"stories_per_s={r['rows'] / r['seconds']:.0f} peak_rss_mb={r['peak_rss_mb']:.0f} "
            f"floor_mb={r['floor_mb']:.0f} rss_above_floor_mb={r['above_floor_mb']:.0f} "
            f"anon_above_floor_mb={r['anon_above_floor_mb']:.0f} "
            f"worker_peak_rss_mb={r['worker_peak_rss_mb']:.0f}"
        )
    ours_sps = ours["rows"] / ours["seconds"]
    base_sps = base["rows"] / base["seconds"]
    plain_sps = plain["rows"] / plain["seconds"]
    print(
        f"ratio ours/baseline_streaming: throughput={ours_sps / base_sps:.2f} "
        "(ours also writes release text/JSON files and the card, and decontaminates)"
    )
    print(
        f"export: stories_per_s={ours_sps:.0f} rss_above_floor_mb={ours['above_floor_mb']:.0f} "
        f"baseline_streaming_per_s={base_sps:.0f} ours_no_decontam_per_s={plain_sps:.0f} "
        f"baseline_rss_above_floor_mb={base['above_floor_mb']:.0f} "
        f"anon_above_floor_mb={ours['anon_above_floor_mb']:.0f} "
        f"baseline_anon_above_floor_mb={base['anon_above_floor_mb']:.0f} "
        f"worker_peak_rss_mb={ours['worker_peak_rss_mb']:.0f} load1={os.getloadavg()[0]:.1f}"
    )


def load_avg() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
