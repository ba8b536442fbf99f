"""Export directory writer: parquet shards, TinyStories release files, DatasetDict, card, manifest.

Consumes an iterator of row dicts (the export columns) with bounded memory: rows are buffered in
small batches, streamed into parquet shards and the release-format text/JSON files, and the
``datasets.DatasetDict`` is built from the finished parquet shards (memory-mapped Arrow), then
saved next to them so ``load_from_disk(out_dir)`` and
``load_dataset("parquet", data_dir=out_dir / "parquet")`` both work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.minhash import text_hash

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SEPARATOR = "<|endoftext|>"
STORY_MARKER = "Story: \n\n"
SPLITS = ("train", "validation")
RELEASE_NAMES = {
    "train": ("TinyStories-train.txt", "TinyStoriesInstruct-train.txt"),
    "validation": ("TinyStories-valid.txt", "TinyStoriesInstruct-valid.txt"),
}
STRING_COLUMNS = (
    "id",
    "text",
    "instruct_text",
    "summary",
    "instruction",
    "verb",
    "noun",
    "adjective",
    "model",
    "provider",
    "source",
)
COLUMNS = (*STRING_COLUMNS, "features", "cost_usd", "dedup_cluster", "story_hash")
_HIST_MAX = 4096  # word/char counts above this share the last histogram bucket

ProgressCallback = Callable[[int, int | None], None]


class ExportError(ValueError):
    """Bad export options or rows; the message names the field."""


def _schema() -> Any:
    import pyarrow as pa

    fields = [pa.field(c, pa.string(), nullable=False) for c in STRING_COLUMNS]
    fields += [
        pa.field("features", pa.list_(pa.string()), nullable=False),
        pa.field("cost_usd", pa.float64(), nullable=False),
        pa.field("dedup_cluster", pa.string(), nullable=True),
        pa.field("story_hash", pa.string(), nullable=False),
    ]
    return pa.schema(fields)


def split_of(story_hash: str, *, seed: int, validation_fraction: float) -> str:
    """Stable split: the same story hash, seed and fraction always land in the same split."""
    digest = hashlib.sha256(f"{seed}:{story_hash}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "validation" if u < validation_fraction else "train"


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults and check types so every row matches the export schema."""
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ExportError(f"row {row.get('id')!r}: field 'text' must be a non-empty string")
    out: dict[str, Any] = {}
    for c in STRING_COLUMNS:
        v = row.get(c)
        out[c] = "" if v is None else str(v)
    out["text"] = text.strip()
    out["story_hash"] = str(row.get("story_hash") or text_hash(text))
    if not out["id"]:
        out["id"] = out["story_hash"][:16]
    if not out["instruct_text"]:
        out["instruct_text"] = out["instruction"] + STORY_MARKER + out["text"]
    feats = row.get("features") or []
    if isinstance(feats, str) or not isinstance(feats, list | tuple):
        raise ExportError(f"row {out['id']}: field 'features' must be a list of strings")
    out["features"] = [str(f) for f in feats]
    try:
        out["cost_usd"] = float(row.get("cost_usd") or 0.0)
    except (TypeError, ValueError):
        raise ExportError(f"row {out['id']}: field 'cost_usd' must be a number") from None
    cluster = row.get("dedup_cluster")
    out["dedup_cluster"] = None if cluster is None else str(cluster)
    out["prompt"] = row.get("prompt")  # release JSON only, not a parquet column
    return out


def release_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A TinyStories_all_data record for one export row."""
    words = [w for w in (row["verb"], row["noun"], row["adjective"]) if w]
    return {
        "story": row["text"],
        "instruction": {
            "prompt:": row.get("prompt") or "",
            "words": words,
            "features": list(row["features"]),
        },
        "summary": row["summary"],
        "source": row["model"] or row["source"],
    }


class _Stats:
    """Running statistics with O(1) memory in the number of rows."""

    def __init__(self) -> None:
        self.words = np.zeros(_HIST_MAX + 1, dtype=np.int64)
        self.chars = np.zeros(_HIST_MAX + 1, dtype=np.int64)
        self.word_total = 0
        self.char_total = 0
        self.models: Counter[str] = Counter()
        self.providers: Counter[str] = Counter()
        self.cost = 0.0
        self.near_dups = 0
        self.with_summary = 0

    def add(self, row: Mapping[str, Any]) -> None:
        w = len(row["text"].split())
        c = len(row["text"])
        self.words[min(w, _HIST_MAX)] += 1
        self.chars[min(c, _HIST_MAX)] += 1
        self.word_total += w
        self.char_total += c
        self.models[row["model"] or "unknown"] += 1
        self.providers[row["provider"] or "unknown"] += 1
        self.cost += row["cost_usd"]
        self.near_dups += row["dedup_cluster"] is not None
        self.with_summary += bool(row["summary"])

    @staticmethod
    def _summary(hist: np.ndarray, total: int) -> dict[str, Any]:
        n = int(hist.sum())
        if n == 0:
            return {"total": 0, "mean": 0.0, "min": 0, "median": 0, "p95": 0, "max": 0}
        cum = np.cumsum(hist)
        nz = np.flatnonzero(hist)

        def pct(q: float) -> int:
            return int(np.searchsorted(cum, q * n, side="left"))

        return {
            "total": total,
            "mean": round(total / n, 2),
            "min": int(nz[0]),
            "median": pct(0.5),
            "p95": pct(0.95),
            "max": int(nz[-1]),  # capped at the histogram size
        }

    def token_stats(self) -> dict[str, Any]:
        return {
            "words_per_story": self._summary(self.words, self.word_total),
            "characters_per_story": self._summary(self.chars, self.char_total),
            "tokenization": "whitespace words; characters are Unicode code points",
        }


class _SplitWriter:
    """Parquet shards + release text files for one split."""

    def __init__(self, root: Path, split: str, shard_rows: int) -> None:
        self.root = root
        self.split = split
        self.shard_rows = shard_rows
        self.shards: list[Path] = []
        self._writer: Any = None
        self._in_shard = 0
        self.rows = 0
        plain, instruct = RELEASE_NAMES[split]
        self._plain = open(root / "tinystories" / plain, "w", encoding="utf-8", newline="\n")
        self._instruct = open(root / "tinystories" / instruct, "w", encoding="utf-8", newline="\n")

    def write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _schema()
        start = 0
        while start < len(rows):
            if self._writer is None:
                path = self.root / "parquet" / f"{self.split}-{len(self.shards):05d}.tmp"
                self.shards.append(path)
                self._writer = pq.ParquetWriter(path, schema)
                self._in_shard = 0
            take = rows[start : start + self.shard_rows - self._in_shard]
            cols = {c: [r[c] for r in take] for c in COLUMNS}
            self._writer.write_table(pa.Table.from_pydict(cols, schema=schema))
            self._in_shard += len(take)
            start += len(take)
            if self._in_shard >= self.shard_rows:
                self._writer.close()
                self._writer = None
        self._plain.write("".join(f"{r['text']}\n{SEPARATOR}\n" for r in rows))
        self._instruct.write("".join(f"{r['instruct_text']}\n{SEPARATOR}\n" for r in rows))
        self.rows += len(rows)

    def close(self) -> list[Path]:
        import pyarrow.parquet as pq

        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self.shards:  # keep the schema on disk even for an empty split
            path = self.root / "parquet" / f"{self.split}-00000.tmp"
            pq.ParquetWriter(path, _schema()).close()
            self.shards.append(path)
        self._plain.close()
        self._instruct.close()
        n = len(self.shards)
        final = []
        for i, tmp in enumerate(self.shards):
            dest = tmp.with_name(f"{self.split}-{i:05d}-of-{n:05d}.parquet")
            tmp.rename(dest)
            final.append(dest)
        self.shards = final
        return final


class _JsonChunks:
    """TinyStories_all_data/dataNN.json files, each a JSON list written record by record."""

    def __init__(self, directory: Path, records_per_file: int) -> None:
        self.dir = directory
        self.per_file = records_per_file
        self.files: list[Path] = []
        self._f: Any = None
        self._n = 0

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            if self._f is None:
                path = self.dir / f"data{len(self.files):02d}.json"
                self.files.append(path)
                self._f = open(path, "w", encoding="utf-8")
                self._f.write("[")
                self._n = 0
            self._f.write(("," if self._n else "") + json.dumps(rec, ensure_ascii=False))
            self._n += 1
            if self._n >= self.per_file:
                self._close_file()

    def _close_file(self) -> None:
        self._f.write("]")
        self._f.close()
        self._f = None

    def close(self) -> list[Path]:
        if self._f is not None:
            self._close_file()
        if not self.files:
            path = self.dir / "data00.json"
            path.write_text("[]", encoding="utf-8")
            self.files.append(path)
        return self.files


@dataclass
class ExportResult:
    out_dir: Path
    fingerprint: str
    counts: dict[str, int]
    manifest: dict[str, Any] = field(repr=False)


class ExportWriter:
    """Writes one export directory from a stream of rows (see module docstring)."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        validation_fraction: float,
        seed: int,
        fmt: Literal["plain", "instruct"] = "plain",
        shard_rows: int = 100_000,
        json_records_per_file: int = 100_000,
        batch_rows: int = 2_000,
        decontaminator: Any | None = None,
        on_progress: ProgressCallback | None = None,
        progress_every: int = 1_000,
    ) -> None:
        if not isinstance(validation_fraction, int | float) or not (
            0.0 < float(validation_fraction) < 1.0
        ):
            raise ExportError(
                "validation_fraction must be between 0 and 1 (exclusive), "
                f"got {validation_fraction!r}"
            )
        if fmt not in ("plain", "instruct"):
            raise ExportError(f"fmt must be 'plain' or 'instruct', got {fmt!r}")
        for name, v in (
            ("shard_rows", shard_rows),
            ("json_records_per_file", json_records_per_file),
            ("batch_rows", batch_rows),
        ):
            if v < 1:
                raise ExportError(f"{name} must be >= 1, got {v}")
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and (not self.out_dir.is_dir() or any(self.out_dir.iterdir())):
            raise ExportError(f"out_dir {self.out_dir} exists and is not an empty directory")
        self.validation_fraction = float(validation_fraction)
        self.seed = int(seed)
        self.fmt = fmt
        self.shard_rows = shard_rows
        self.json_records_per_file = json_records_per_file
        self.batch_rows = batch_rows
        self.decontaminator = decontaminator
        self.on_progress = on_progress
        self.progress_every = progress_every

    def options(self) -> dict[str, Any]:
        return {
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
            "format": self.fmt,
            "format_version": FORMAT_VERSION,
        }

    def write(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        total: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ExportResult:
        """Consume `rows` (in a deterministic order) and write the whole export directory.

        On any error the partly written directory is removed, so no half export is left behind.
        """
        created = not self.out_dir.exists()
        try:
            return self._write(rows, total=total, metadata=metadata)
        except BaseException:
            if created:
                shutil.rmtree(self.out_dir, ignore_errors=True)
            else:
                for child in self.out_dir.iterdir():
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            raise

    def _write(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        total: int | None,
        metadata: Mapping[str, Any] | None,
    ) -> ExportResult:
        out = self.out_dir
        (out / "parquet").mkdir(parents=True, exist_ok=True)
        (out / "tinystories" / "TinyStories_all_data").mkdir(parents=True, exist_ok=True)
        splits = {s: _SplitWriter(out, s, self.shard_rows) for s in SPLITS}
        chunks = _JsonChunks(
            out / "tinystories" / "TinyStories_all_data", self.json_records_per_file
        )
        stats = {s: _Stats() for s in SPLITS}
        fp = hashlib.sha256(json.dumps(self.options(), sort_keys=True).encode())
        buffers: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        release: list[dict[str, Any]] = []
        seen = contaminated = 0
        self.max_buffered = 0  # largest number of rows held at once (bounded by batch_rows)

        def flush() -> None:
            for s in SPLITS:
                if buffers[s]:
                    splits[s].write(buffers[s])
                    buffers[s].clear()
            chunks.write(release)
            release.clear()

        for raw in rows:
            seen += 1
            row = normalize_row(raw)
            if (
                self.decontaminator is not None
                and self.decontaminator.check(row["text"]).contaminated
            ):
                contaminated += 1
            else:
                split = split_of(
                    row["story_hash"], seed=self.seed, validation_fraction=self.validation_fraction
                )
                buffers[split].append(row)
                release.append(release_record(row))
                stats[split].add(row)
                fp.update(row["story_hash"].encode() + b"\n")
                held = len(buffers["train"]) + len(buffers["validation"])
                self.max_buffered = max(self.max_buffered, held)
                if held >= self.batch_rows:
                    flush()
            if self.on_progress and seen % self.progress_every == 0:
                self.on_progress(seen, total)
        flush()
        shards = {s: splits[s].close() for s in SPLITS}
        json_files = chunks.close()
        counts = {
            "train": splits["train"].rows,
            "validation": splits["validation"].rows,
            "total": splits["train"].rows + splits["validation"].rows,
            "read": seen,
            "excluded_contaminated": contaminated,
        }
        for s in SPLITS:
            if counts[s] == 0:
                # datasets cannot load a parquet split without rows; an empty split is useless
                raise ExportError(
                    f"the {s} split would be empty ({counts['total']} stories exported, "
                    f"validation_fraction={self.validation_fraction}): export more stories or "
                    "change validation_fraction"
                )
        self._save_dataset_dict(shards)
        fingerprint = fp.hexdigest()
        manifest = self._manifest(fingerprint, counts, stats, shards, json_files, metadata or {})
        (out / "export.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        (out / "README.md").write_text(render_card(manifest), encoding="utf-8")
        if self.on_progress:
            self.on_progress(seen, total if total is not None else seen)
        log.info(
            "export written dir=%s rows=%d train=%d validation=%d contaminated=%d fp=%s",
            out,
            counts["total"],
            counts["train"],
            counts["validation"],
            contaminated,
            fingerprint[:12],
        )
        return ExportResult(out, fingerprint, counts, manifest)

    def _save_dataset_dict(self, shards: Mapping[str, list[Path]]) -> None:
        import datasets
        from datasets import Dataset, DatasetDict, Features, Sequence, Value

        features = Features(
            {c: Value("string") for c in STRING_COLUMNS}
            | {
                "features": Sequence(Value("string")),
                "cost_usd": Value("float64"),
                "dedup_cluster": Value("string"),
                "story_hash": Value("string"),
            }
        )
        cache = Path(tempfile.mkdtemp(prefix="ts-export-cache-", dir=self.out_dir.parent))
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # progress is reported through on_progress
        try:
            dd = DatasetDict(
                {
                    s: Dataset.from_parquet(
                        [str(p) for p in shards[s]],
                        features=features,
                        cache_dir=str(cache / s),
                        split="train",
                    )
                    for s in SPLITS
                }
            )
            dd.save_to_disk(str(self.out_dir))
        finally:
            if bars:
                datasets.enable_progress_bars()
            shutil.rmtree(cache, ignore_errors=True)

    def _manifest(
        self,
        fingerprint: str,
        counts: dict[str, int],
        stats: Mapping[str, _Stats],
        shards: Mapping[str, list[Path]],
        json_files: list[Path],
        metadata: Mapping[str, Any],
    ) -> dict[str, Any]:
        both = _Stats()
        for s in SPLITS:
            st = stats[s]
            both.words += st.words
            both.chars += st.chars
            both.word_total += st.word_total
            both.char_total += st.char_total
            both.models.update(st.models)
            both.providers.update(st.providers)
            both.cost += st.cost
            both.near_dups += st.near_dups
            both.with_summary += st.with_summary
        total = counts["total"]
        rel = [str(p.relative_to(self.out_dir)) for s in SPLITS for p in shards[s]]
        rel += [str(p.relative_to(self.out_dir)) for p in json_files]
        rel += [f"tinystories/{name}" for s in SPLITS for name in RELEASE_NAMES[s]]
        dedup = dict(metadata.get("dedup") or {})
        dedup.update(
            {
                "near_duplicates_exported": both.near_dups,
                "near_duplicate_rate": round(both.near_dups / total, 6) if total else 0.0,
            }
        )
        decon = dict(metadata.get("decontamination") or {})
        if self.decontaminator is not None:
            decon.update(self.decontaminator.params())
        decon["excluded"] = counts["excluded_contaminated"]
        return {
            **{k: v for k, v in metadata.items() if k not in ("dedup", "decontamination")},
            "format_version": FORMAT_VERSION,
            "fingerprint": fingerprint,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "options": self.options(),
            "counts": counts,
            "token_stats": both.token_stats(),
            "models": dict(both.models.most_common()),
            "providers": dict(both.providers.most_common()),
            "cost_usd": round(both.cost, 6),
            "with_summary": both.with_summary,
            "dedup": dedup,
            "decontamination": decon,
            "files": rel,
        }


def render_card(manifest: Mapping[str, Any]) -> str:
    """Dataset card: YAML front matter (HF metadata + export facts) and a short body."""
    import yaml

    counts = manifest["counts"]
    front = {
        "pretty_name": manifest.get("name") or "TinyStories-style synthetic stories",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {"split": "train", "path": "parquet/train-*.parquet"},
                    {"split": "validation", "path": "parquet/validation-*.parquet"},
                ],
            }
        ],
        "counts": counts,
        "token_stats": manifest["token_stats"],
        "models": manifest["models"],
        "providers": manifest["providers"],
        "cost_usd": manifest["cost_usd"],
        "dedup": manifest["dedup"],
        "decontamination": manifest["decontamination"],
        "template_version": manifest.get("template_version"),
        "provenance": manifest.get("provenance", {}),
        "format": manifest["options"]["format"],
        "validation_fraction": manifest["options"]["validation_fraction"],
        "split_seed": manifest["options"]["seed"],
        "fingerprint": manifest["fingerprint"],
    }
    words = manifest["token_stats"]["words_per_story"]
    body = (
        "# TinyStories-style dataset export\n\n"
        f"{counts['total']} stories ({counts['train']} train, {counts['validation']} validation), "
        f"{words['mean']} words per story on average. Splits are stable: a story's split is a "
        "hash of its normalised text and the split seed.\n\n"
        "## Layout\n\n"
        "- `dataset_dict.json`, `train/`, `validation/`: `datasets.load_from_disk(dir)`\n"
        '- `parquet/`: `datasets.load_dataset("parquet", data_dir=dir + "/parquet")`\n'
        "- `tinystories/`: files in the format of the TinyStories release "
        "(`<|endoftext|>`-separated text, TinyStories-Instruct text, `TinyStories_all_data` JSON)\n"
        "- `export.json`: manifest with the fingerprint of the exported stories and options\n\n"
        f"Near-duplicates exported: {manifest['dedup']['near_duplicates_exported']}; "
        f"stories excluded for overlap with the evaluation prompts: "
        f"{manifest['decontamination']['excluded']}.\n"
    )
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + body
