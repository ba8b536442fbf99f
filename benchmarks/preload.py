"""Preload a store with N distinct real-text stories and their dedup index, in bulk.

Each story joins four parts of four different real TinyStories (the 1,200-story sample in
tests/service/data, each split at sentence ends into quarters of about equal length), so
1,200^4 combinations are available and every story reads like a real one (~900 characters).
The rows the service's dedup reads are written for every story, as for an imported corpus of
unique stories: `story_hashes` (sha256 of the normalised text, 32 raw bytes), `story_bands` (42
LSH band keys per story) and `story_signatures` (128 x 32-bit MinHash).

Fast and exact: a MinHash signature of a union of shingle sets is the element-wise minimum of
their signatures, and a story's word 5-grams are those of its four parts plus the four that
cross each join (the 5-grams of the join's 8 words: last 4 + first 4). So signatures are
computed once per part plus once per join (8 words), never over whole stories; the first
stories are checked against service.dataset's own signature and hash of the full text. Rows go
in with INSERT ... SELECT (stories, hashes) and binary COPY built by numpy (bands, signatures);
the band table's index is rebuilt after its rows are in, as one would for a bulk load.

    python benchmarks/preload.py --url postgresql+psycopg://... --n 1000000
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "tests/service/data/TinyStories-train-sample1200.txt"
PARTS = 4
BLOCK = 50_000  # stories per COPY block: ~2.1M band rows, ~55 MB
_SENTENCE_END = re.compile(r"(?<=[.!?\"])\s+")
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"
_BAND_ROW = np.dtype([("n", ">i2"), ("l1", ">i4"), ("a", ">i8"), ("l2", ">i4"), ("b", ">i8")])


def split_parts(story: str, k: int = PARTS) -> list[str] | None:
    """The story cut at sentence ends into k runs of about equal word count (None: too short)."""
    sentences = [s for s in _SENTENCE_END.split(story.strip()) if s]
    if len(sentences) < k:
        return None
    words = np.cumsum([len(s.split()) for s in sentences])
    cuts = [int(np.searchsorted(words, words[-1] * j / k)) + 1 for j in range(1, k)]
    bounds = [0, *cuts, len(sentences)]
    if any(b >= e for b, e in itertools.pairwise(bounds)):
        return None
    return [" ".join(sentences[b:e]) for b, e in itertools.pairwise(bounds)]


def part_pools() -> tuple[list[list[str]], list[list[str]]]:
    """PARTS pools (raw text, normalised text) of equal size, one per position in a story."""
    from service.dataset.minhash import normalize_text

    stories = [s.strip() for s in SAMPLE.read_text(encoding="utf-8").split("<|endoftext|>")]
    raw: list[list[str]] = [[] for _ in range(PARTS)]
    norm: list[list[str]] = [[] for _ in range(PARTS)]
    for story in stories:
        parts = split_parts(story) if story else None
        if parts is None:
            continue
        normed = [normalize_text(p) for p in parts]
        # Five words or more per part: no 5-gram then spans two joins (the union stays exact).
        if any(len(n.split()) < 5 for n in normed):
            continue
        for k in range(PARTS):
            raw[k].append(parts[k])
            norm[k].append(normed[k])
    return raw, norm


def part_indices(ids: np.ndarray, pool: int) -> np.ndarray:
    """(len(ids), PARTS) pool index of each part of story `i` (0-based); the same formulas run
    in SQL. The first two parts alone are distinct for every i < pool**2."""
    i = ids.astype(np.int64)
    a = i % pool
    b = (i // pool + 7 * a) % pool
    c = (i * 7919 + (i // pool) * 31 + 3) % pool
    d = (i * 104729 + (i // pool) * 53 + 11) % pool
    return np.stack([a, b, c, d], axis=1)


_INDEX_SQL = [
    "(g.i %% %(p)s)",
    "((g.i / %(p)s + 7 * (g.i %% %(p)s)) %% %(p)s)",
    "((g.i * 7919 + (g.i / %(p)s) * 31 + 3) %% %(p)s)",
    "((g.i * 104729 + (g.i / %(p)s) * 53 + 11) %% %(p)s)",
]


class Signer:
    """Exact MinHash signatures of the recombined stories, block by block."""

    def __init__(self, norm: list[list[str]]) -> None:
        from service.dataset.dedup import signatures
        from service.dataset.minhash import MinHashParams

        self.params = MinHashParams()
        self._signatures = signatures
        self.pool = len(norm[0])
        self.part_sigs = [self.sign(n) for n in norm]
        self.heads = [[" ".join(n.split()[:4]) for n in pool] for pool in norm]
        self.tails = [[" ".join(n.split()[-4:]) for n in pool] for pool in norm]

    def sign(self, normalized: list[str]) -> np.ndarray:
        return self._signatures(normalized, self.params, normalized=True)

    def block(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), num_perm) signatures of stories `ids` (0-based)."""
        idx = part_indices(ids, self.pool)
        sig = self.part_sigs[0][idx[:, 0]].copy()
        for k in range(1, PARTS):
            np.minimum(sig, self.part_sigs[k][idx[:, k]], out=sig)
            tails, heads = self.tails[k - 1], self.heads[k]
            joins = [f"{tails[x]} {heads[y]}" for x, y in idx[:, k - 1 : k + 1].tolist()]
            np.minimum(sig, self.sign(joins), out=sig)
        return sig


def _copy(cur, target: str, rows: np.ndarray) -> None:
    with cur.copy(f"COPY {target} FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(_COPY_HEADER + rows.tobytes() + _COPY_TRAILER)


def _bands_and_signatures(cur, signer: Signer, ids: np.ndarray, sig: np.ndarray) -> None:
    from service.dataset.minhash import band_keys_batch

    p = signer.params
    keys = band_keys_batch(sig, p.bands, p.rows)
    bands = np.empty(keys.size, dtype=_BAND_ROW)
    bands["n"], bands["l1"], bands["l2"] = 2, 8, 8
    bands["a"], bands["b"] = keys.ravel(), np.repeat(ids + 1, p.bands)
    _copy(cur, "story_bands (band_hash, story_id)", bands)
    sig_row = np.dtype(
        [("n", ">i2"), ("l1", ">i4"), ("id", ">i8"), ("l2", ">i4"), ("sig", "<u4", (p.num_perm,))]
    )
    rows = np.empty(len(ids), dtype=sig_row)
    rows["n"], rows["l1"], rows["l2"] = 2, 8, 4 * p.num_perm
    rows["id"], rows["sig"] = ids + 1, sig
    _copy(cur, "story_signatures (story_id, minhash)", rows)


def _insert_stories(conn, raw: list[list[str]], norm: list[list[str]], n: int) -> None:
    """Stories 1..n and their text hashes, set-based (the text hash via Postgres's sha256)."""
    pool = len(raw[0])
    conn.execute("CREATE TEMP TABLE preload_parts (k int, x int, raw text, norm text)")
    with conn.cursor().copy("COPY preload_parts FROM STDIN") as copy:
        for k in range(PARTS):
            for x in range(pool):
                copy.write_row((k, x, raw[k][x], norm[k][x]))
    joins = " ".join(
        f"JOIN preload_parts p{k} ON p{k}.k = {k} AND p{k}.x = {_INDEX_SQL[k]}"
        for k in range(PARTS)
    )
    conn.execute(
        f"""
        INSERT INTO stories (id, text, verb, noun, adjective, features, model, provider,
                             prompt_tokens, completion_tokens, cost_usd, accepted, text_hash,
                             dedup_status, source, created_at)
        SELECT g.i + 1, concat_ws(' ', p0.raw, p1.raw, p2.raw, p3.raw),
               (ARRAY['run','jump','share','find','play'])[1 + g.i %% 5],
               (ARRAY['dog','ball','tree','boat','cake','park'])[1 + g.i %% 6],
               (ARRAY['happy','big','shiny','kind'])[1 + g.i %% 4],
               (ARRAY['[]','["Dialogue"]','["Twist"]','["Dialogue", "MoralValue"]'])
                   [1 + g.i %% 4]::jsonb,
               (ARRAY['gpt-4','gpt-3.5-turbo'])[1 + g.i %% 2], 'import', 0, 0, 0, true,
               encode(sha256(convert_to(concat_ws(' ', p0.norm, p1.norm, p2.norm, p3.norm),
                                        'UTF8')), 'hex'),
               'unique', 'import', now() - make_interval(secs => (%(n)s - g.i) / 100.0)
        FROM generate_series(0::bigint, %(n)s - 1) AS g(i) {joins}
        """.replace("%(p)s", str(pool)),
        {"n": n},
    )
    conn.execute(
        "INSERT INTO story_hashes (text_hash, story_id) "
        "SELECT decode(text_hash, 'hex'), id FROM stories"
    )
    conn.execute("SELECT setval(pg_get_serial_sequence('stories', 'id'), %s)", (n,))


def _check(conn, signer: Signer, count: int = 64) -> None:
    """The first stories' hash and signature equal service.dataset's on the full text."""
    from service.dataset.minhash import normalize_text, text_hash

    rows = conn.execute(
        "SELECT id, text, text_hash FROM stories ORDER BY id LIMIT %s", (count,)
    ).fetchall()
    full = signer.sign([normalize_text(t) for _, t, _ in rows])
    ids = np.array([r[0] - 1 for r in rows])
    if not np.array_equal(full, signer.block(ids)):
        raise SystemExit("preload: recombined signatures differ from the full-text signatures")
    if any(text_hash(t) != h for _, t, h in rows):
        raise SystemExit("preload: the SQL text hash differs from service.dataset's")


def preload(url: str, n: int, *, log=print) -> dict[str, float]:
    """Write n stories with their dedup index into an empty, migrated store; seconds per step."""
    import psycopg

    from service.store.exports import libpq_url

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    raw, norm = part_pools()
    signer = Signer(norm)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        if conn.execute("SELECT EXISTS (SELECT 1 FROM stories)").fetchone()[0]:
            raise SystemExit("preload needs an empty stories table")
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")
        _insert_stories(conn, raw, norm, n)
        times["stories_s"] = time.perf_counter() - t0
        log(f"  preload: {n} stories and text hashes in {times['stories_s']:.1f} s")
        index_defs = [
            r[0]
            for r in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'story_bands'"
            ).fetchall()
        ]
        for d in index_defs:
            conn.execute(f"DROP INDEX {d.split(' INDEX ', 1)[1].split(' ON ', 1)[0]}")
        t1 = time.perf_counter()
        cur = conn.cursor()
        with ThreadPoolExecutor(1) as pool:
            blocks = [np.arange(s, min(s + BLOCK, n)) for s in range(0, n, BLOCK)]
            pending = pool.submit(signer.block, blocks[0]) if blocks else None
            for j, ids in enumerate(blocks):
                sig = pending.result()
                if j + 1 < len(blocks):  # the next block's signatures while this one is copied
                    pending = pool.submit(signer.block, blocks[j + 1])
                _bands_and_signatures(cur, signer, ids, sig)
        times["bands_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        for d in index_defs:
            conn.execute(d)
        times["band_index_s"] = time.perf_counter() - t2
        conn.execute(
            "INSERT INTO dedup_params (id, params) VALUES (1, %s::jsonb) "
            "ON CONFLICT (id) DO UPDATE SET params = EXCLUDED.params",
            (json.dumps(signer.params.to_dict(), sort_keys=True),),
        )
        _check(conn, signer)
        t3 = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        times["vacuum_s"] = time.perf_counter() - t3
    times["total_s"] = time.perf_counter() - t0
    log(
        f"  preload: bands+signatures {times['bands_s']:.1f} s, band index "
        f"{times['band_index_s']:.1f} s, vacuum {times['vacuum_s']:.1f} s, "
        f"total {times['total_s']:.1f} s ({n / times['total_s']:.0f} stories/s)"
    )
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="a migrated database with no stories")
    ap.add_argument("--n", type=int, required=True)
    args = ap.parse_args()
    preload(args.url, args.n)


if __name__ == "__main__":
    main()
