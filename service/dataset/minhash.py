"""Text normalisation, exact-duplicate hashes and MinHash/LSH near-duplicate detection.

Pure module: no database. Signatures follow datasketch's ``affine32`` MinHash scheme
(``datasketch.MinHash(num_perm, seed)`` permutations applied to 32-bit shingle hashes), but are
computed for many stories at once with numpy. The store keeps one row per (band_no, band_hash)
and one signature per story; :func:`resolve_cluster` holds the verification rule both the
in-memory index and the Postgres index apply to the candidates that share a band.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

SHINGLE_WORDS = 5
DEFAULT_NUM_PERM = 128
DEFAULT_SEED = 1
# Calibrated on real TinyStories text with planted edits (docs/dedup.md).
DEFAULT_BANDS = 42
DEFAULT_ROWS = 3
DEFAULT_THRESHOLD = 0.3

_APOSTROPHES = re.compile(r"['’‘`´]")
_NON_WORD = re.compile(r"[^\w\s]+|_+")
_U64 = np.uint64
_U32 = np.uint32
_MAX32 = np.uint32(0xFFFFFFFF)
_PAD = ""  # word id 0; normalised words are never empty
# Odd 64-bit multipliers: one per word position in a shingle / row in a band.
_POSITION_MULTIPLIERS = np.array(
    [
        0x9E3779B97F4A7C15,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0xD6E8FEB86659FD93,
        0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53,
        0x94D049BB133111EB,
        0xBF58476D1CE4E5B9,
    ],
    dtype=_U64,
)


def _ascii_table() -> bytes:
    # ASCII letters and digits lowercased, every other byte a space: for ASCII text this is
    # what the general path does (NFKC is the identity there, \w is [A-Za-z0-9_] and "_" is
    # dropped as punctuation), in one C pass instead of two regex passes (5x faster).
    return bytes(c if chr(c).isalnum() else 0x20 for c in bytes(range(128)).lower()) + bytes(128)


_ASCII_TABLE = _ascii_table()
_ASCII_APOSTROPHES = b"'`"  # dropped before splitting on punctuation, as _APOSTROPHES


def normalized_words(text: str) -> list[str]:
    """``normalize_text(text).split()``: the words every hash and sketch sees."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TABLE, _ASCII_APOSTROPHES).decode().split()
    text = unicodedata.normalize("NFKC", text).lower()
    return _NON_WORD.sub(" ", _APOSTROPHES.sub("", text)).split()


def normalize_text(text: str) -> str:
    """NFKC, lowercase, drop punctuation, collapse whitespace: the form every hash sees."""
    return " ".join(normalized_words(text))


def text_hash(text: str) -> str:
    """Hex sha256 of the normalised text: equal for stories that differ only in case/spacing."""
    return normalized_hash(normalize_text(text))


def normalized_hash(normalized: str) -> str:
    """text_hash of a text normalize_text returned already (saves normalising twice)."""
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def shingles(text: str, n: int = SHINGLE_WORDS) -> list[str]:
    """Word n-grams of the normalised text (a shorter text is one shingle)."""
    words = normalize_text(text).split()
    if not words:
        return []
    if len(words) < n:
        return [" ".join(words)]
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def cached_word_ids(
    words: list[str], cache: dict[str, int], *, limit: int, mark: int = 0
) -> list[int]:
    """64-bit blake2b id of each word (OR `mark`), remembered in `cache` up to `limit` words."""
    ids = list(map(cache.get, words))
    if None in ids:
        for i, wid in enumerate(ids):
            if wid is None:
                word = words[i]
                wid = cache.get(word)  # met earlier in this batch
                if wid is None:
                    digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
                    wid = int.from_bytes(digest, "little") | mark
                    if len(cache) < limit:
                        cache[word] = wid
                ids[i] = wid
    return ids


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, elementwise (also the diversity sketch's hash)."""
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    # Same finaliser datasketch applies before its affine32 permutations.
    h = h ^ (h >> _U32(16))
    h = h * _U32(0x85EBCA6B)
    h = h ^ (h >> _U32(13))
    h = h * _U32(0xC2B2AE35)
    return h ^ (h >> _U32(16))


@dataclass(frozen=True)
class MinHashParams:
    """Signature and LSH shape; changing any field invalidates stored band hashes."""

    num_perm: int = DEFAULT_NUM_PERM
    seed: int = DEFAULT_SEED
    bands: int = DEFAULT_BANDS
    rows: int = DEFAULT_ROWS
    threshold: float = DEFAULT_THRESHOLD
    shingle_words: int = SHINGLE_WORDS

    def __post_init__(self) -> None:
        if self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands*rows={self.bands * self.rows} exceeds num_perm={self.num_perm}"
            )
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.rows > len(_POSITION_MULTIPLIERS) or self.shingle_words > 5:
            raise ValueError("rows must be <= 8 and shingle_words <= 5")

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_perm": self.num_perm,
            "seed": self.seed,
            "bands": self.bands,
            "rows": self.rows,
            "threshold": self.threshold,
            "shingle_words": self.shingle_words,
            "scheme": "datasketch-affine32",
        }


class MinHasher:
    """Batch MinHash signatures, bit-identical to datasketch's affine32 scheme."""

    def __init__(self, params: MinHashParams | None = None) -> None:
        from datasketch import MinHash

        self.params = params or MinHashParams()
        # datasketch generates the permutations: same seed and num_perm -> same functions.
        perms = MinHash(num_perm=self.params.num_perm, seed=self.params.seed).permutations
        self._a = np.asarray(perms[0], dtype=_U32)
        self._b = np.asarray(perms[1], dtype=_U32)
        self._word_cache: dict[str, int] = {_PAD: 0}

    def _word_ids(self, words: list[str]) -> list[int]:
        # Odd ids: never 0, which pads short texts.
        return cached_word_ids(words, self._word_cache, limit=2_000_000, mark=1)

    def shingle_hashes(self, text: str) -> np.ndarray:
        """32-bit hash of each word 5-gram (the values a datasketch MinHash would be fed)."""
        hashes, _ = self._batch_shingle_hashes([text])
        return hashes

    def _batch_shingle_hashes(
        self, texts: Sequence[str], normalized: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        n = self.params.shingle_words
        pad = [_PAD] * (n - 1)  # pad each text so a short one still forms one shingle
        flat: list[str] = []
        lengths = np.zeros(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            words = (text if normalized else normalize_text(text)).split()
            if words:
                lengths[i] = len(words)
                flat += words
                flat += pad
        counts = np.where(lengths > 0, np.maximum(lengths - n + 1, 1), 0)
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, dtype=_U32), counts
        tok = np.array(self._word_ids(flat), dtype=_U64)
        offsets = np.cumsum(np.where(lengths > 0, lengths + n - 1, 0)) - np.where(
            lengths > 0, lengths + n - 1, 0
        )
        first = np.cumsum(counts) - counts
        pos = np.repeat(offsets - first, counts) + np.arange(total, dtype=np.int64)
        acc = np.zeros(total, dtype=_U64)
        for j in range(n):
            acc += tok[pos + j] * _POSITION_MULTIPLIERS[j]
        return (fmix64(acc) >> _U64(32)).astype(_U32), counts

    def signatures(
        self, texts: Sequence[str], *, chunk_shingles: int = 1_024, normalized: bool = False
    ) -> np.ndarray:
        """(len(texts), num_perm) uint32 signatures; an empty text gets all 0xFFFFFFFF.
        `normalized`: the texts are normalize_text's output already."""
        out = np.full((len(texts), self.params.num_perm), _MAX32, dtype=_U32)
        hashes, counts = self._batch_shingle_hashes(texts, normalized)
        if hashes.size == 0:
            return out
        mixed = _fmix32(hashes)
        ends = np.cumsum(counts)
        begins = ends - counts
        nonempty = np.flatnonzero(counts)
        # Whole stories per chunk; ~1k shingles keeps the (shingles x num_perm) block in cache.
        i = 0
        while i < len(nonempty):
            j = i
            lo = begins[nonempty[i]]
            while j < len(nonempty) and (ends[nonempty[j]] - lo <= chunk_shingles or j == i):
                j += 1
            rows = nonempty[i:j]
            hi = ends[rows[-1]]
            perm = mixed[lo:hi, None] * self._a[None, :] + self._b[None, :]
            out[rows] = np.minimum.reduceat(perm, begins[rows] - lo, axis=0)
            i = j
        return out

    def signature(self, text: str) -> np.ndarray:
        return self.signatures([text])[0]


def band_keys_batch(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) int64 band hashes: one signed 64-bit value per band, fits a Postgres bigint."""
    sig = np.atleast_2d(np.asarray(signatures, dtype=_U32))
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows={bands * rows} exceeds signature length {sig.shape[1]}")
    block = sig[:, : bands * rows].reshape(sig.shape[0], bands, rows).astype(_U64)
    acc = (block * _POSITION_MULTIPLIERS[:rows]).sum(axis=2, dtype=_U64)
    acc += np.arange(bands, dtype=_U64) * _U64(0x2545F4914F6CDD1D)
    return fmix64(acc).view(np.int64)


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[int]:
    """Band hashes of one signature as Python ints (signed 64-bit, list index = band_no)."""
    return [int(v) for v in band_keys_batch(signature, bands, rows)[0]]


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of equal signature slots: unbiased estimate of the shingle-set Jaccard."""
    a = np.asarray(sig_a)
    b = np.asarray(sig_b)
    if a.shape != b.shape:
        raise ValueError(f"signature shapes differ: {a.shape} vs {b.shape}")
    return float(np.count_nonzero(a == b)) / a.size


def is_empty_signature(signature: np.ndarray) -> bool:
    return bool(np.all(np.asarray(signature) == _MAX32))


def signature_to_bytes(signature: np.ndarray) -> bytes:
    """Little-endian uint32 bytes (num_perm*4 bytes) for a Postgres bytea column."""
    return np.asarray(signature, dtype="<u4").tobytes()


def signature_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u4").astype(_U32)


class Candidate(NamedTuple):
    """A stored story that shares at least one band with the incoming one."""

    story_id: Any
    signature: np.ndarray
    cluster_id: Any | None  # None: the candidate is itself a cluster root


def resolve_cluster(
    signature: np.ndarray, candidates: Iterable[Candidate], threshold: float
) -> Any | None:
    """Earliest cluster root among candidates whose estimated Jaccard passes the threshold.

    Story ids must sort in arrival order (the store's bigint identity does); a root is always
    earlier than its members, so the smallest verified root is the earliest story duplicated.
    """
    best = None
    for cand in candidates:
        if jaccard_estimate(signature, cand.signature) < threshold:
            continue  # LSH false positive: verification keeps precision
        root = cand.story_id if cand.cluster_id is None else cand.cluster_id
        if best is None or root < best:
            best = root
    return best


class NearDupIndex(Protocol):
    """The contract shared by the in-memory index and the Postgres band table."""

    def query_and_insert(self, story_id: Hashable, signature: np.ndarray) -> Any | None:
        """Return the cluster id (earliest duplicated story) or None, then index the story."""
        ...


class InMemoryNearDupIndex:
    """Dict-of-bands LSH index with verification; same semantics as the store's index."""

    def __init__(self, params: MinHashParams | None = None) -> None:
        self.params = params or MinHashParams()
        self._buckets: list[dict[int, list[Any]]] = [{} for _ in range(self.params.bands)]
        self._signatures: dict[Any, np.ndarray] = {}
        self._clusters: dict[Any, Any | None] = {}

    def __len__(self) -> int:
        return len(self._signatures)

    def cluster_of(self, story_id: Hashable) -> Any | None:
        return self._clusters.get(story_id)

    def query_and_insert(
        self, story_id: Hashable, signature: np.ndarray, keys: Sequence[int] | None = None
    ) -> Any | None:
        if story_id in self._signatures:
            raise ValueError(f"story {story_id!r} is already indexed")
        if is_empty_signature(signature):
            return None  # no shingles: nothing to compare
        p = self.params
        if keys is None:
            keys = band_keys(signature, p.bands, p.rows)
        seen: set[Any] = set()
        cands: list[Candidate] = []
        for bucket, key in zip(self._buckets, keys, strict=True):
            for other in bucket.get(key, ()):
                if other not in seen:
                    seen.add(other)
                    cands.append(Candidate(other, self._signatures[other], self._clusters[other]))
        cluster = resolve_cluster(signature, cands, p.threshold)
        for bucket, key in zip(self._buckets, keys, strict=True):
            bucket.setdefault(key, []).append(story_id)
        self._signatures[story_id] = signature
        self._clusters[story_id] = cluster
        return cluster
