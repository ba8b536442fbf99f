"""Export directory writer: parquet shards, TinyStories release files, DatasetDict, card, manifest.

Consumes an iterator of row dicts (the export columns) with bounded memory: rows are buffered in
small batches and each batch is streamed at once into the parquet shards, the Arrow files of the
saved ``datasets.DatasetDict`` (``<split>/data-0000i-of-0000N.arrow``, one per parquet shard,
with the ``state.json`` / ``dataset_info.json`` / ``dataset_dict.json`` that
``DatasetDict.save_to_disk`` writes) and the release-format text/JSON files. Nothing is read
back, so memory does not grow with the number of stories, and both
``load_from_disk(out_dir)`` and ``load_dataset("parquet", data_dir=out_dir / "parquet")`` work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from service.export_card import (
    ExportStats,
    JsonChunks,
    build_manifest,
    release_record,
    render_card,
)
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


def _datasets_schema() -> Any:
    """The schema of the saved Arrow files: what ``datasets`` writes for the export features
    (every field nullable, the features JSON in the ``huggingface`` schema metadata)."""
    from datasets import Features

    return Features.from_arrow_schema(_schema()).arrow_schema


def _dataset_files(split_dir: Path, fingerprint: str, n_files: int) -> None:
    """``state.json`` and ``dataset_info.json`` of one split, as ``Dataset.save_to_disk``
    writes them for a dataset with the export features and no transforms."""
    from datasets import DatasetInfo, Features
    from datasets.utils.py_utils import asdict

    state = {
        "_data_files": [
            {"filename": f"data-{i:05d}-of-{n_files:05d}.arrow"} for i in range(n_files)
        ],
        "_fingerprint": fingerprint,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split_dir.name,
    }
    (split_dir / "state.json").write_text(
        json.dumps(state, indent=2, sort_keys=True), encoding="utf-8"
    )
    info = asdict(DatasetInfo(features=Features.from_arrow_schema(_schema())))
    (split_dir / "dataset_info.json").write_text(
        json.dumps({k: info[k] for k in sorted(info)}, indent=2), encoding="utf-8"
    )


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


class _SplitWriter:
    """Parquet shards, the matching saved-dataset Arrow files and release text for one split."""

    def __init__(self, root: Path, split: str, shard_rows: int) -> None:
        self.root = root
        self.split = split
        self.shard_rows = shard_rows
        self.shards: list[Path] = []
        self.arrow_files: list[Path] = []
        self._writer: Any = None
        self._arrow: Any = None
        self._in_shard = 0
        self._schema = _schema()
        self._arrow_schema = _datasets_schema()
        (root / split).mkdir()
        self.rows = 0
        plain, instruct = RELEASE_NAMES[split]
        self._plain = open(root / "tinystories" / plain, "w", encoding="utf-8", newline="\n")
        self._instruct = open(root / "tinystories" / instruct, "w", encoding="utf-8", newline="\n")

    def _open_shard(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        i = len(self.shards)
        path = self.root / "parquet" / f"{self.split}-{i:05d}.tmp"
        self.shards.append(path)
        self._writer = pq.ParquetWriter(path, self._schema)
        arrow = self.root / self.split / f"data-{i:05d}.tmp"
        self.arrow_files.append(arrow)
        self._arrow = pa.ipc.new_stream(str(arrow), self._arrow_schema)
        self._in_shard = 0

    def _close_shard(self) -> None:
        self._writer.close()
        self._writer = None
        self._arrow.close()
        self._arrow = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        start = 0
        while start < len(rows):
            if self._writer is None:
                self._open_shard()
            take = rows[start : start + self.shard_rows - self._in_shard]
            cols = {c: [r[c] for r in take] for c in COLUMNS}
            table = pa.Table.from_pydict(cols, schema=self._schema)
            self._writer.write_table(table)
            # same buffers, the datasets schema: no copy
            self._arrow.write_table(pa.Table.from_arrays(table.columns, schema=self._arrow_schema))
            self._in_shard += len(take)
            start += len(take)
            if self._in_shard >= self.shard_rows:
                self._close_shard()
        self._plain.write("".join(f"{r['text']}\n{SEPARATOR}\n" for r in rows))
        self._instruct.write("".join(f"{r['instruct_text']}\n{SEPARATOR}\n" for r in rows))
        self.rows += len(rows)

    def close(self) -> list[Path]:
        if self._writer is None and not self.shards:  # keep the schema even for an empty split
            self._open_shard()
        if self._writer is not None:
            self._close_shard()
        self._plain.close()
        self._instruct.close()
        n = len(self.shards)
        self.shards = [
            tmp.rename(tmp.with_name(f"{self.split}-{i:05d}-of-{n:05d}.parquet"))
            for i, tmp in enumerate(self.shards)
        ]
        self.arrow_files = [
            tmp.rename(tmp.with_name(f"data-{i:05d}-of-{n:05d}.arrow"))
            for i, tmp in enumerate(self.arrow_files)
        ]
        return self.shards


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
        chunks = JsonChunks(
            out / "tinystories" / "TinyStories_all_data", self.json_records_per_file
        )
        stats = {s: ExportStats() for s in SPLITS}
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
        fingerprint = fp.hexdigest()
        for s in SPLITS:
            # datasets keys its cache files on this: distinct per export content and split
            split_fp = hashlib.sha256(f"{fingerprint}:{s}".encode()).hexdigest()[:16]
            _dataset_files(out / s, split_fp, len(splits[s].arrow_files))
        (out / "dataset_dict.json").write_text(json.dumps({"splits": list(SPLITS)}), "utf-8")
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

    def _manifest(
        self,
        fingerprint: str,
        counts: dict[str, int],
        stats: Mapping[str, ExportStats],
        shards: Mapping[str, list[Path]],
        json_files: list[Path],
        metadata: Mapping[str, Any],
    ) -> dict[str, Any]:
        rel = [str(p.relative_to(self.out_dir)) for s in SPLITS for p in shards[s]]
        rel += [str(p.relative_to(self.out_dir)) for p in json_files]
        rel += [f"tinystories/{name}" for s in SPLITS for name in RELEASE_NAMES[s]]
        return build_manifest(
            format_version=FORMAT_VERSION,
            fingerprint=fingerprint,
            options=self.options(),
            counts=counts,
            stats=[stats[s] for s in SPLITS],
            files=rel,
            metadata=metadata,
            decontamination=(
                self.decontaminator.params() if self.decontaminator is not None else None
            ),
        )
