"""MinHash + LSH near-duplicate detection: throughput, precision and recall on planted edits.

Corpus: the 1,200 real TinyStories stories, simulator-grammar stories (10% of the originals),
stories recombined from real sentences, and planted near-duplicates (sentence swaps, word
substitutions of 1-10% of words, truncations keeping 70-95%, and a combination) whose source is
known. Precision is strict: any flagged story that is not a planted edit of its cluster's root
counts as a false positive.

"ours": batch-vectorised signatures (service.dataset.minhash.MinHasher) + the band index
contract the Postgres index implements (service.dataset.minhash.InMemoryNearDupIndex: query,
verify, insert).
"baseline": datasketch at its fastest: MinHash.bulk (permutations built once per batch of
2,000, not once per story) + in-memory datasketch.MinHashLSH with the same num_perm/bands/rows,
candidates verified with the same Jaccard threshold.

Two headlines, both on the same corpus:
- `dedup:` the in-memory index (what the two libraries compare like for like);
- `dedup_postgres:` the path users run, `tinystories import` of the corpus (stories stored in
  an embedded Postgres, exact and near-duplicate check in the shared index, one transaction per
  2,000 stories), against the datasketch baseline, which stores nothing.

    python benchmarks/bench_dedup.py [--quick] [--n N] [--no-postgres]
    python benchmarks/bench_dedup.py --calibrate   # threshold/band table for docs/dedup.md
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

import numpy as np

from service.dataset.minhash import (
    InMemoryNearDupIndex,
    MinHasher,
    MinHashParams,
    band_keys_batch,
    shingles,
)

FAST_PG = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
SAMPLE = Path(__file__).resolve().parents[1] / "tests/service/data/TinyStories-train-sample1200.txt"
EDIT_KINDS = ("swap", "subst", "trunc", "combo")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r"(?<=[.!?])[\"']?\s+|\n+")


def load_real() -> list[str]:
    text = SAMPLE.read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()]


def _swap(text: str, rng: random.Random) -> str:
    sents = _SENTENCE.split(text)
    if len(sents) < 3:
        return text
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(sents) - 1)
        sents[i], sents[i + 1] = sents[i + 1], sents[i]
    return " ".join(sents)


def _subst(text: str, rng: random.Random, frac: float, vocab: list[str]) -> str:
    words = text.split(" ")
    k = max(1, round(frac * len(words)))
    for i in rng.sample(range(len(words)), min(k, len(words))):
        words[i] = rng.choice(vocab)
    return " ".join(words)


def _trunc(text: str, keep: float) -> str:
    words = text.split(" ")
    return " ".join(words[: max(1, round(keep * len(words)))])


def plant(text: str, kind: str, rng: random.Random, vocab: list[str]) -> str:
    """A near-duplicate of `text` made by one planted edit kind."""
    if kind == "swap":
        return _swap(text, rng)
    if kind == "subst":
        return _subst(text, rng, rng.uniform(0.01, 0.10), vocab)
    if kind == "trunc":
        return _trunc(text, rng.uniform(0.70, 0.95))
    # combo: a swap, a light substitution and a light truncation together
    out = _swap(text, rng)
    out = _subst(out, rng, rng.uniform(0.01, 0.05), vocab)
    return _trunc(out, rng.uniform(0.85, 0.95))


def simulator_stories(n: int, seed: int) -> list[str]:
    """Stories from the simulator's story grammar, one recipe each."""
    from generator.simulator.grammar import StoryRequest, write_story
    from vocab import RecipeSampler

    sampler = RecipeSampler()
    out = []
    for i in range(n):
        r = sampler.recipe(seed, i)
        req = StoryRequest(r.verb, r.noun, r.adjective, tuple(r.features))
        out.append(write_story(req, random.Random(seed * 1_000_003 + i)))
    return out


def build_corpus(n: int, seed: int = 0, dup_fraction: float = 0.2, sim_fraction: float = 0.1):
    """(texts, source, origin): source[i] is the index a planted near-dup was made from, else -1;
    origin[i] is real / simulator / recombined / planted."""
    rng = random.Random(seed)
    real = load_real()
    vocab = sorted({w for t in real for w in t.split() if w.isalpha()})
    # Short clauses only: a long shared chunk would make two synthetic stories real near-dups.
    pool = [s for t in real for s in _CLAUSE.split(t) if 3 <= len(s.split()) <= 20]
    n_dup = int(n * dup_fraction)
    n_base = n - n_dup
    base = list(real[:n_base])
    origin_of = ["real"] * len(base)
    n_sim = min(int(n_base * sim_fraction), n_base - len(base))
    base += simulator_stories(n_sim, seed)
    origin_of += ["simulator"] * n_sim
    while len(base) < n_base:  # recombined real sentences
        k = rng.randint(6, 16)
        base.append(" ".join(rng.choice(pool) for _ in range(k)))
        origin_of.append("recombined")
    order = list(range(n_base))
    rng.shuffle(order)  # interleave real, simulator and recombined stories
    base = [base[i] for i in order]
    origin_of = [origin_of[i] for i in order]
    # Each planted dup is placed somewhere after its source in the stream.
    keys: list[tuple[float, int, int]] = [(float(i), i, -1) for i in range(n_base)]
    for j in range(n_dup):
        src = rng.randrange(n_base)
        keys.append((rng.uniform(src + 0.5, n_base), n_base + j, src))
    keys.sort()
    texts: list[str] = []
    source: list[int] = []
    origin: list[str] = []
    pos_of_base: dict[int, int] = {}
    for _, ident, src in keys:
        if src < 0:
            pos_of_base[ident] = len(texts)
            texts.append(base[ident])
            source.append(-1)
            origin.append(origin_of[ident])
        else:
            texts.append(plant(base[src], EDIT_KINDS[ident % 4], rng, vocab))
            source.append(pos_of_base[src])
            origin.append("planted")
    return texts, np.array(source), origin


def false_positives_by_origin(
    clusters: list[int | None], source: np.ndarray, origin: list[str]
) -> dict[str, int]:
    root = [c if c is not None else i for i, c in enumerate(clusters)]
    out: dict[str, int] = {}
    for i, c in enumerate(clusters):
        if c is not None and not (source[i] >= 0 and c == root[source[i]]):
            out[origin[i]] = out.get(origin[i], 0) + 1
    return out


def score(clusters: list[int | None], source: np.ndarray) -> tuple[float, float]:
    """Precision over flagged stories, recall over planted ones (cluster must be the source's)."""
    root = [c if c is not None else i for i, c in enumerate(clusters)]
    flagged = tp = 0
    for i, c in enumerate(clusters):
        if c is None:
            continue
        flagged += 1
        if source[i] >= 0 and c == root[source[i]]:
            tp += 1
    planted = int((source >= 0).sum())
    precision = tp / flagged if flagged else 1.0
    recall = tp / planted if planted else 1.0
    return precision, recall


def run_ours(texts: list[str], params: MinHashParams, batch: int = 2000):
    hasher = MinHasher(params)
    index = InMemoryNearDupIndex(params)
    clusters: list[int | None] = []
    t0 = time.perf_counter()
    for lo in range(0, len(texts), batch):
        sigs = hasher.signatures(texts[lo : lo + batch])
        keys = band_keys_batch(sigs, params.bands, params.rows).tolist()
        for k in range(len(sigs)):
            clusters.append(index.query_and_insert(lo + k, sigs[k], keys[k]))
    return clusters, time.perf_counter() - t0


def run_datasketch(texts: list[str], params: MinHashParams, batch: int = 2000):
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=params.num_perm, params=(params.bands, params.rows))
    sigs: dict[int, MinHash] = {}
    clusters: list[int | None] = []
    t0 = time.perf_counter()
    for lo in range(0, len(texts), batch):
        sets = [
            [s.encode("utf-8") for s in shingles(t, params.shingle_words)]
            for t in texts[lo : lo + batch]
        ]
        for k, m in enumerate(MinHash.bulk(sets, num_perm=params.num_perm, seed=params.seed)):
            i = lo + k
            best = None
            for cand in lsh.query(m):
                if m.jaccard(sigs[cand]) >= params.threshold:
                    r = clusters[cand] if clusters[cand] is not None else cand
                    best = r if best is None or r < best else best
            clusters.append(best)
            lsh.insert(i, m)
            sigs[i] = m
    return clusters, time.perf_counter() - t0


def run_postgres(texts: list[str]) -> tuple[list[int | None], float]:
    """`tinystories import` of the corpus (a text release file) into an embedded Postgres."""
    import asyncio
    import shutil
    import tempfile

    import psycopg

    from service.dataset.importer import import_file
    from service.db import make_engine, make_sessionmaker
    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, ensure_database

    root = Path(tempfile.mkdtemp(prefix="bench-dedup-"))
    server = EmbeddedPostgres(root / "pg", extra_options=FAST_PG)
    try:
        info = server.ensure_running()
        ensure_database(info.url(driver="postgresql"), "bench")
        url = info.url("bench")
        upgrade(url)
        path = root / "corpus.txt"
        path.write_text("".join(f"{t}\n<|endoftext|>\n" for t in texts), encoding="utf-8")

        async def run() -> float:
            engine = make_engine(url, pool_size=2)
            try:
                t0 = time.perf_counter()
                await import_file(make_sessionmaker(engine), path, max_chars=1 << 30)
                return time.perf_counter() - t0
            finally:
                await engine.dispose()

        seconds = asyncio.run(run())
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            ids = conn.execute("SELECT id, dedup_cluster_id FROM stories ORDER BY id").fetchall()
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    pos = {story_id: i for i, (story_id, _) in enumerate(ids)}
    clusters = [None if c is None else pos[c] for _, c in ids]
    return clusters, seconds


def calibrate(seed: int = 0) -> None:
    """Precision/recall on the real sample + one planted variant of each kind per story."""
    rng = random.Random(seed)
    real = load_real()
    vocab = sorted({w for t in real for w in t.split() if w.isalpha()})
    texts = list(real)
    source = [-1] * len(real)
    kinds = [""] * len(real)
    for i, t in enumerate(real):
        for kind in EDIT_KINDS:
            texts.append(plant(t, kind, rng, vocab))
            source.append(i)
            kinds.append(kind)
    src = np.array(source)
    # True shingle Jaccard of planted pairs, per edit kind.
    print("true 5-gram Jaccard of planted pairs (min / p5 / median):")
    for kind in EDIT_KINDS:
        js = []
        for i, k in enumerate(kinds):
            if k == kind:
                a, b = set(shingles(texts[i])), set(shingles(texts[src[i]]))
                js.append(len(a & b) / len(a | b))
        print(f"  {kind:6s} {min(js):.3f} / {np.percentile(js, 5):.3f} / {np.median(js):.3f}")
    hasher = MinHasher(MinHashParams())
    sigs = hasher.signatures(real)
    top = [float((sigs[i + 1 :] == sigs[i]).mean(axis=1).max()) for i in range(len(real) - 1)]
    print(
        f"distinct real stories: max estimated Jaccard over all pairs = {max(top):.3f}, "
        f"99th percentile of per-story max = {np.percentile(top, 99):.3f}"
    )
    print()
    print("| bands x rows | threshold | precision | recall | swap | subst | trunc | combo |")
    print("|---|---|---|---|---|---|---|---|")
    for bands, rows in ((16, 8), (20, 6), (25, 5), (32, 4), (42, 3), (64, 2)):
        for thr in (0.2, 0.3, 0.4, 0.5):
            params = MinHashParams(bands=bands, rows=rows, threshold=thr)
            clusters, _ = run_ours(texts, params)
            p, r = score(clusters, src)
            per = []
            for kind in EDIT_KINDS:
                idx = [i for i, k in enumerate(kinds) if k == kind]
                per.append(sum(clusters[i] == src[i] for i in idx) / len(idx))
            print(
                f"| {bands}x{rows} | {thr} | {p:.4f} | {r:.4f} | "
                + " | ".join(f"{x:.3f}" for x in per)
                + " |"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20,000 stories")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--no-postgres", action="store_true", help="skip the Postgres import path")
    args = ap.parse_args()
    if args.calibrate:
        calibrate(args.seed)
        return
    n = args.n or (20_000 if args.quick else 100_000)
    params = MinHashParams()
    t0 = time.perf_counter()
    texts, source, origin = build_corpus(n, seed=args.seed)
    counts = {k: origin.count(k) for k in ("real", "simulator", "recombined", "planted")}
    print(
        f"corpus: {n} stories {counts}, "
        f"built in {time.perf_counter() - t0:.1f}s; params {params.to_dict()}"
    )
    print(
        "ours = batch numpy signatures + in-memory band index with the store's contract "
        "(query, verify, insert); the Postgres-backed index runs the same resolve_cluster"
    )
    ours, t_ours = run_ours(texts, params)
    p, r = score(ours, source)
    print(f"ours:        {n / t_ours:10.0f} stories/s  precision={p:.4f} recall={r:.4f}")
    print(f"ours false positives by origin: {false_positives_by_origin(ours, source, origin)}")
    base, t_base = run_datasketch(texts, params)
    bp, br = score(base, source)
    print(f"datasketch:  {n / t_base:10.0f} stories/s  precision={bp:.4f} recall={br:.4f}")
    if not args.no_postgres:
        pg, t_pg = run_postgres(texts)
        gp, gr = score(pg, source)
        print(
            f"postgres import (stored, exact + near, shared index): {n / t_pg:10.0f} stories/s  "
            f"precision={gp:.4f} recall={gr:.4f}"
        )
        print(
            f"dedup_postgres: stories_per_s={n / t_pg:.0f} "
            f"ratio_vs_datasketch_in_memory={t_base / t_pg:.2f} precision={gp:.4f} recall={gr:.4f}"
        )
    print(
        f"dedup: stories_per_s={n / t_ours:.0f} ratio_vs_datasketch={t_base / t_ours:.2f} "
        f"precision={p:.4f} recall={r:.4f}"
    )


if __name__ == "__main__":
    main()
