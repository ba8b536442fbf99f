"""Export throughput and peak memory: stored stories -> dataset directory.

Seeds N stories straight in SQL (INSERT ... SELECT generate_series over the real 1,200-story
sample, each made distinct), then exports them in a child process and reads that process's peak
RSS. "ours": service.dataset.exporter.run_export (server-side cursor -> ExportWriter: parquet
shards, release files, DatasetDict, card; decontamination on). "baseline": the naive way, in another
child: fetch every row into memory, datasets.Dataset.from_list, save_to_disk (less output).

    python benchmarks/bench_export.py [--quick] [--n N]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
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


def child(mode: str, url: str, out: str) -> None:
    """Run one export in this process and print its figures as JSON."""
    t0 = time.perf_counter()
    if mode == "ours":
        from service.dataset.exporter import ExportOptions, run_export

        result = run_export(url, out, ExportOptions(validation_fraction=0.05, seed=0))
        rows = result.counts["total"]
    else:
        import datasets
        import psycopg

        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            cur = conn.execute(
                "SELECT id::text, text, summary, verb, noun, adjective, features, model, "
                "provider, source, cost_usd::float8, text_hash FROM stories ORDER BY id"
            )
            names = [d.name for d in cur.description]
            data = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        datasets.disable_progress_bars()
        datasets.Dataset.from_list(data).train_test_split(test_size=0.05, seed=0).save_to_disk(out)
        rows = len(data)
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": peak_kb / 1024}))


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
    ap.add_argument("--child", choices=("ours", "baseline"), help=argparse.SUPPRESS)
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
        ours = run_child("ours", url, root / "ours")
        base = run_child("baseline", url, root / "baseline")
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    for name, r in (("ours", ours), ("baseline", base)):
        print(
            f"{name:9s} rows={r['rows']} seconds={r['seconds']:.1f} "
            f"stories_per_s={r['rows'] / r['seconds']:.0f} peak_rss_mb={r['peak_rss_mb']:.0f}"
        )
    ours_sps = ours["rows"] / ours["seconds"]
    base_sps = base["rows"] / base["seconds"]
    print(
        f"ratio ours/baseline: throughput={ours_sps / base_sps:.2f} "
        f"peak_rss={ours['peak_rss_mb'] / base['peak_rss_mb']:.2f} "
        "(ours also writes parquet shards, release text/JSON files, card, decontamination)"
    )
    print(f"export: stories_per_s={ours_sps:.0f} peak_rss_mb={ours['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
