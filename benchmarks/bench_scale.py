"""The dataset at the paper's scale: import with the near-duplicate check, then export.

Writes N real-like stories (the simulator's story grammar, which has real-like overlap, with
recipe words, features and a model, plus 2% planted exact and near duplicates) as JSONL shards
of 100,000 records, imports them with `tinystories import`'s code path (service.dataset.importer:
insert + exact and near-duplicate check in Postgres, one transaction per batch, all shards in one
process as `tinystories import part*.jsonl` does), exports them with
`tinystories export`'s (service.dataset.exporter.run_export), and measures:

- import_per_s: stories imported per second, dedup included (the importer's own child process),
  and the CHECKPOINT after it that writes its pages out (so the service measured next does not
  pay for the import's writes in the background);
- export_per_s: stories exported per second (another child process);
- peak_rss_mb: the larger peak RSS of the two children (Postgres's memory is not counted);
- CPU milliseconds per story of each phase, the Python process and the Postgres server apart:
  the figures that do not depend on what else the machine runs (wall-clock rates do; the load
  average is printed with them), and that docs/scale.md extrapolates from;
- db_bytes_per_story: the database's size after the import, minus the empty database's, per
  story (tables, indexes and TOAST; the band index included), and its parts;
- import_ratio_full_vs_empty: the import rate of the last 100,000 stories (a store already
  holding N - 100,000) over the rate of the first 100,000 (an empty store): the band-index
  lookups the service's indexer also makes are the part that grows with the store.
- service_ratio_full_vs_empty: the service's own end-to-end rate (API, workers started after
  the submit, a fast simulator, dedup on arrival) on the store the import filled over the same
  job on an empty store of the same server, alternately (benchmarks/service_ratio.py; median of
  3 rounds, 2 with --quick; nan with --no-service). The same is then printed for the server
  restarted with the embedded server's own settings (durable commits, full-page writes), as
  users run it: `service_ratio_durable`.

A fair baseline in the same run: the same stories through datasketch (MinHash.bulk +
in-memory MinHashLSH) and a plain COPY of the rows into the stories table, no index kept.

    python benchmarks/bench_scale.py [--quick] [--n N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAST_PG = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
SHARD = 100_000
MODELS = ("GPT-4", "GPT-3.5")


def write_corpus(directory: Path, n: int, seed: int = 0) -> list[Path]:
    """N records in JSONL shards: simulator-grammar stories, 1% exact and 1% near copies."""
    from generator.simulator.grammar import StoryRequest, write_story
    from vocab import RecipeSampler

    sampler = RecipeSampler()
    rng = random.Random(seed)
    files: list[Path] = []
    out = None
    recent: list[str] = []
    for i in range(n):
        if i % SHARD == 0:
            if out is not None:
                out.close()
            files.append(directory / f"part{len(files):03d}.jsonl")
            out = files[-1].open("w", encoding="utf-8")
        r = sampler.recipe(seed, i)
        roll = rng.random()
        if roll < 0.01 and recent:  # an exact copy of a recent story
            story = rng.choice(recent)
        elif roll < 0.02 and recent:  # a near copy: one sentence dropped
            sents = rng.choice(recent).split(". ")
            sents.pop(rng.randrange(len(sents)))
            story = ". ".join(sents)
        else:
            req = StoryRequest(r.verb, r.noun, r.adjective, tuple(r.features))
            story = write_story(req, random.Random(seed * 1_000_003 + i))
            recent = [*recent[-999:], story]
        rec = {
            "story": story,
            "instruction": {"words": [r.verb, r.noun, r.adjective], "features": r.features},
            "source": MODELS[i % 2],
        }
        assert out is not None
        out.write(json.dumps(rec) + "\n")
    if out is not None:
        out.close()
    return files


def child_import(url: str, server_pid: int, files: list[str]) -> None:
    """Import the shards in this process; per shard seconds and CPU seconds (this process and
    the Postgres server apart), and the peak RSS, as JSON."""
    import asyncio

    from sqlalchemy import text

    from service.dataset.importer import import_file
    from service.dataset.minhash import MinHashParams
    from service.db import make_engine, make_sessionmaker
    from service.store.signature_cache import SignatureCache

    async def run() -> tuple[list[dict], float]:
        engine = make_engine(url, pool_size=2)
        sm = make_sessionmaker(engine)
        cache = SignatureCache(MinHashParams().num_perm)  # as `tinystories import` of many files
        out = []
        try:
            for f in files:
                t0, cpu0, pg0 = time.perf_counter(), _cpu(_usage()), server_cpu(server_pid)
                s = await import_file(sm, f, cache=cache)
                out.append(
                    {
                        "stories": s.inserted,
                        "seconds": time.perf_counter() - t0,
                        "cpu_s": _cpu(_usage()) - cpu0,
                        "pg_cpu_s": server_cpu(server_pid) - pg0,
                    }
                )
            # The import's pages are written out by the checkpoint after it: charged to the
            # import, and the service measured next starts without that work in the background.
            t0 = time.perf_counter()
            async with engine.connect() as conn:
                await conn.execute(text("CHECKPOINT"))
            checkpoint_s = time.perf_counter() - t0
        finally:
            await engine.dispose()
        return out, checkpoint_s

    shards, checkpoint_s = asyncio.run(run())
    use = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "shards": shards,
                "checkpoint_s": checkpoint_s,
                "peak_rss_mb": use.ru_maxrss / 1024,
                "cpu_s": _cpu(use),
            }
        )
    )


def _usage() -> resource.struct_rusage:
    return resource.getrusage(resource.RUSAGE_SELF)


def _cpu(use: resource.struct_rusage) -> float:
    return use.ru_utime + use.ru_stime


def server_cpu(pid: int) -> float:
    """CPU seconds of the Postgres server so far: the postmaster, its live children, and the
    children that have exited (backends of closed connections)."""
    import psutil

    main = psutil.Process(pid)
    t = main.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in main.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def child_export(url: str, out: str) -> None:
    from service.dataset.exporter import ExportOptions, run_export

    t0 = time.perf_counter()
    result = run_export(url, out, ExportOptions(validation_fraction=0.05, seed=0))
    seconds = time.perf_counter() - t0
    use = resource.getrusage(resource.RUSAGE_SELF)
    rows = result.counts["total"]
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": seconds,
                "peak_rss_mb": use.ru_maxrss / 1024,
                "cpu_s": _cpu(use),
            }
        )
    )


def child_baseline(files: list[str]) -> None:
    """datasketch MinHash.bulk + in-memory MinHashLSH over the same stories, same parameters
    (near duplicates only: it stores nothing and has no exact-duplicate check)."""
    from datasketch import MinHash, MinHashLSH

    from service.dataset.minhash import MinHashParams, shingles

    p = MinHashParams()
    lsh = MinHashLSH(num_perm=p.num_perm, params=(p.bands, p.rows))
    roots: dict[int, MinHash] = {}
    n = dups = 0

    def check(batch: list[str]) -> None:
        nonlocal n, dups
        sets = [[s.encode("utf-8") for s in shingles(t, p.shingle_words)] for t in batch]
        for m in MinHash.bulk(sets, num_perm=p.num_perm, seed=p.seed):
            if any(m.jaccard(roots[k]) >= p.threshold for k in lsh.query(m)):
                dups += 1
            else:
                lsh.insert(n, m)
                roots[n] = m
            n += 1

    t0 = time.perf_counter()
    for f in files:
        batch: list[str] = []
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                batch.append(json.loads(line)["story"])
                if len(batch) == 2_000:
                    check(batch)
                    batch = []
        if batch:
            check(batch)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"stories": n, "seconds": seconds, "dups": dups, "peak_rss_mb": peak}))


def run_child(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def db_sizes(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        total = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        parts = conn.execute(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        ).fetchall()
    return {"database": total, **{name: size for name, size in parts}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200,000 stories")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--no-baseline", action="store_true", help="skip the datasketch baseline")
    ap.add_argument("--no-service", action="store_true", help="skip the service full/empty run")
    ap.add_argument(
        "--pg-options", default="", help='more server options, e.g. "-c shared_buffers=1GB"'
    )
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "import":
            child_import(rest[0], int(rest[1]), rest[2:])
        elif kind == "export":
            child_export(rest[0], rest[1])
        else:
            child_baseline(rest)
        return
    n = args.n or (200_000 if args.quick else 2_000_000)

    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, ensure_database

    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = EmbeddedPostgres(root / "pg", extra_options=f"{FAST_PG} {args.pg_options}".strip())
    try:
        t0 = time.perf_counter()
        (root / "corpus").mkdir()
        files = [str(f) for f in write_corpus(root / "corpus", n)]
        print(f"corpus: {n} stories in {len(files)} JSONL shards, {time.perf_counter() - t0:.0f}s")
        info = server.ensure_running()
        ensure_database(info.url(driver="postgresql"), "bench")
        url = info.url("bench")
        upgrade(url)
        empty = db_sizes(url)
        pg0 = server_cpu(info.pid)
        imp = run_child("import", url, str(info.pid), *files)
        pg1 = server_cpu(info.pid)
        sizes = db_sizes(url)
        pg2 = server_cpu(info.pid)
        exp = run_child("export", url, str(root / "export"))
        pg3 = server_cpu(info.pid)
        base = None if args.no_baseline else run_child("baseline", *files)
        service = durable = {"ratio": float("nan")}
        if not args.no_service:
            from service_ratio import service_ratio

            ensure_database(info.url(driver="postgresql"), "empty")
            upgrade(info.url("empty"))
            n_job, rounds = (3_000, 2) if args.quick else (10_000, 3)
            service = service_ratio(url, info.url("empty"), root, n_job, rounds)
            # Again on the server as users run it: durable commits and full-page writes.
            server.stop(mode="fast")
            server = EmbeddedPostgres(root / "pg", extra_options=args.pg_options)
            info = server.ensure_running()
            ensure_database(info.url(driver="postgresql"), "empty_durable")
            upgrade(info.url("empty_durable"))
            durable = service_ratio(
                info.url("bench"), info.url("empty_durable"), root / "durable", n_job, rounds
            )
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    shards = imp["shards"]
    stored = sum(s["stories"] for s in shards)
    import_s = sum(s["seconds"] for s in shards) + imp["checkpoint_s"]
    import_per_s = stored / import_s
    export_per_s = exp["rows"] / exp["seconds"]
    first, last = shards[0], shards[-1]
    ratio = (
        (last["stories"] / last["seconds"]) / (first["stories"] / first["seconds"])
        if len(shards) > 1
        else float("nan")
    )
    grown = {k: v - empty.get(k, 0) for k, v in sizes.items()}
    per_story = grown["database"] / stored
    parts = {k: round(v / stored) for k, v in grown.items() if k != "database" and v > 0}
    print(
        f"import: {stored} stories in {import_s:.1f}s ({import_per_s:.0f}/s, the closing "
        f"checkpoint's {imp['checkpoint_s']:.1f}s included), per shard/s: "
        + ", ".join(f"{s['stories'] / s['seconds']:.0f}" for s in shards)
    )
    print(
        "import cpu ms per story by shard (python/postgres): "
        + ", ".join(
            f"{1000 * s['cpu_s'] / s['stories']:.3f}/{1000 * s['pg_cpu_s'] / s['stories']:.3f}"
            for s in shards
        )
    )
    print(f"export: {exp['rows']} stories in {exp['seconds']:.1f}s ({export_per_s:.0f}/s)")
    print(
        f"cpu ms per story: import python={1000 * imp['cpu_s'] / stored:.3f} "
        f"postgres={1000 * (pg1 - pg0) / stored:.3f}; export python="
        f"{1000 * exp['cpu_s'] / exp['rows']:.3f} postgres={1000 * (pg3 - pg2) / exp['rows']:.3f}"
        f" (load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(f"db bytes per story: {per_story:.0f} (by table, indexes and TOAST included: {parts})")
    if base is not None:
        base_per_s = base["stories"] / base["seconds"]
        print(
            f"baseline datasketch MinHash.bulk + in-memory MinHashLSH (no store): "
            f"{base_per_s:.0f}/s, peak_rss_mb={base['peak_rss_mb']:.0f}; "
            f"ours (Postgres, stored, exact + near) / baseline = {import_per_s / base_per_s:.2f}"
        )
    peak = max(imp["peak_rss_mb"], exp["peak_rss_mb"])
    if "full_per_s" in service:
        print(
            f"service end to end: {service['full_per_s']:.1f} stories/s with {stored} stored, "
            f"{service['empty_per_s']:.1f}/s on an empty store (fsync off, as the import)"
        )
        print(
            f"service end to end, durable (the embedded server's own settings): "
            f"{durable['full_per_s']:.1f} stories/s full, {durable['empty_per_s']:.1f}/s empty, "
            f"service_ratio_durable={durable['ratio']:.2f}"
        )
    print(
        f"import_ratio_full_vs_empty={ratio:.2f} (last shard, {stored - last['stories']} stored "
        "before it, over the first, on an empty store)"
    )
    print(
        f"scale: stories={stored} import_per_s={import_per_s:.0f} export_per_s={export_per_s:.0f} "
        f"peak_rss_mb={peak:.0f} db_bytes_per_story={per_story:.0f} "
        f"service_ratio_full_vs_empty={service['ratio']:.2f}"
    )


if __name__ == "__main__":
    main()
