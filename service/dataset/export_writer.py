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

from service.dataset.export_analysis import Analyser, BatchResult
from service.dataset.export_card import (
    ExportStats,
    JsonChunks,
    build_manifest,
    release_record,
    render_card,
)
from service.dataset.export_rows import EmptyExportError, ExportError, normalize_row, split_of
from service.dataset.export_shards import (
    RELEASE_NAMES,
    SPLITS,
    SplitWriter,
    holds_separator,
    rejected_sidecar,
    write_dataset_files,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

ProgressCallback = Callable[[int, int | None], None]


@dataclass
class ExportResult:
    out_dir: Path
    fingerprint: str
    counts: dict[str, int]
    manifest: dict[str, Any] = field(repr=False)
    analysis_worker: bool = False  # decontamination and the sketch ran in a worker process


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
        json_records_per_file: int = 100_000,  # train records per data01.json, data02.json ...
        batch_rows: int = 2_000,
        decontaminator: Any | None = None,
        on_progress: ProgressCallback | None = None,
        progress_every: int = 1_000,
        with_checks: bool = False,
        worker: bool | None = None,
    ) -> None:
        """`with_checks` adds the `accepted` and `rejections` columns (rejected stories in);
        `worker`: decontaminate and sketch in a second process (None: when it pays, see
        export_analysis)."""
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
        self.with_checks = with_checks
        self.worker = worker

    def options(self) -> dict[str, Any]:
        options = {
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
            "format": self.fmt,
            "format_version": FORMAT_VERSION,
            "records_per_shard": self.json_records_per_file,
        }
        # Only when set, so the fingerprints of exports without the columns stay as they were.
        return options | ({"with_checks": True} if self.with_checks else {})

    def _release(self, row: dict[str, Any]) -> dict[str, Any]:
        record = release_record(row)
        if self.with_checks:
            record |= {"accepted": row["accepted"], "rejections": row["rejections"]}
        return record

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
        splits = {s: SplitWriter(out, s, self.shard_rows, self.with_checks) for s in SPLITS}
        # llama2.c's convention: shard 0 is the test split, the rest train. data00.json holds
        # the validation split whole, so any export (both splits are never empty) gives >= 2.
        all_data = out / "tinystories" / "TinyStories_all_data"
        chunks = {
            "validation": JsonChunks(all_data, None, first_index=0),
            "train": JsonChunks(all_data, self.json_records_per_file, first_index=1),
        }
        stats = {s: ExportStats() for s in SPLITS}
        fp = hashlib.sha256(json.dumps(self.options(), sort_keys=True).encode())
        buffers: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        release: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        seen = contaminated = no_instruct = separator = 0
        self.max_buffered = 0  # largest number of rows held at once (bounded by batch_rows)

        def flush() -> None:
            for s in SPLITS:
                if buffers[s]:
                    splits[s].write(buffers[s])
                    buffers[s].clear()
            for s in SPLITS:
                chunks[s].write(release[s])
                release[s].clear()

        def take(batch: list[tuple[dict[str, Any], str]], result: BatchResult) -> None:
            nonlocal contaminated
            for (row, split), bad in zip(batch, result.contaminated, strict=True):
                if bad:
                    contaminated += 1
                    continue
                buffers[split].append(row)
                release[split].append(self._release(row))
                stats[split].add(row)
                # The cluster too where it decides the split (exports of a store without
                # duplicates keep the fingerprint they had).
                clustered = f" {row['cluster_hash']}" if row["cluster_hash"] else ""
                # With the check columns, their values are content too (datasets caches on it).
                checks = (
                    f" {int(row['accepted'])} {','.join(row['rejections'])}"
                    if self.with_checks
                    else ""
                )
                fp.update(f"{row['story_hash']}{clustered}{checks}\n".encode())
                held = len(buffers["train"]) + len(buffers["validation"])
                self.max_buffered = max(self.max_buffered, held)
                if held >= self.batch_rows:
                    flush()
            for s, sketch in result.sketches.items():
                stats[s].diversity.add(sketch)

        def send(batch: list[tuple[dict[str, Any], str]]) -> None:
            items = [
                (r["text"], r["verb"], r["noun"], r["adjective"], r["features"], s)
                for r, s in batch
            ]
            for done in analyser.submit(batch, items):
                take(*done)

        batch: list[tuple[dict[str, Any], str]] = []
        with Analyser(self.decontaminator, total=total, worker=self.worker) as analyser:
            in_worker = analyser.worker is not None
            for raw in rows:
                seen += 1
                row = normalize_row(raw)
                if self.fmt == "instruct" and not row["instruct_header"]:
                    no_instruct += 1
                elif holds_separator(row):
                    separator += 1
                else:
                    key = row["cluster_hash"] or row["story_hash"]
                    fraction = self.validation_fraction
                    batch.append((row, split_of(key, seed=self.seed, validation_fraction=fraction)))
                    if len(batch) >= self.batch_rows:
                        send(batch)
                        batch = []
                if self.on_progress and seen % self.progress_every == 0:
                    self.on_progress(seen, total)
            if batch:
                send(batch)
            for done in analyser.drain():
                take(*done)
        flush()
        shards = {s: splits[s].close() for s in SPLITS}
        json_files = chunks["validation"].close() + chunks["train"].close()
        counts = {
            "train": splits["train"].rows,
            "validation": splits["validation"].rows,
            "total": splits["train"].rows + splits["validation"].rows,
            "read": seen,
            "excluded_contaminated": contaminated,
        }
        if self.fmt == "instruct":
            counts["excluded_no_instruct"] = no_instruct
        if separator:  # only when there are some: the counts of other exports stay as they were
            counts["excluded_separator"] = separator
        for s in SPLITS:
            if counts[s] == 0:
                # datasets cannot load a parquet split without rows; an empty split is useless
                raise EmptyExportError(
                    counts, split=s, validation_fraction=self.validation_fraction
                )
        fingerprint = fp.hexdigest()
        for s in SPLITS:
            # datasets keys its cache files on this: distinct per export content and split
            split_fp = hashlib.sha256(f"{fingerprint}:{s}".encode()).hexdigest()[:16]
            write_dataset_files(out / s, split_fp, len(splits[s].arrow_files), self.with_checks)
        (out / "dataset_dict.json").write_text(json.dumps({"splits": list(SPLITS)}), "utf-8")
        manifest = self._manifest(fingerprint, counts, stats, shards, json_files, metadata or {})
        (out / "export.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        (out / "README.md").write_text(render_card(manifest), encoding="utf-8")
        if self.on_progress:
            self.on_progress(seen, total if total is not None else seen)
        log.info(
            "export written dir=%s rows=%d train=%d validation=%d contaminated=%d fp=%s "
            "analysis=%s",
            out,
            counts["total"],
            counts["train"],
            counts["validation"],
            contaminated,
            fingerprint[:12],
            "worker" if in_worker else "in-process",
        )
        return ExportResult(out, fingerprint, counts, manifest, in_worker)

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
        release = [Path("tinystories", name) for s in SPLITS for name in RELEASE_NAMES[s]]
        if self.with_checks:  # with the text files' rejected-stories listings
            release += [rejected_sidecar(p) for p in release]
        rel += [str(p) for p in release]
        return build_manifest(
            format_version=FORMAT_VERSION,
            fingerprint=fingerprint,
            options=self.options(),
            counts=counts,
            stats=[stats[s] for s in SPLITS],
            files=rel,
            metadata=metadata,
            rejected={s: stats[s].rejected for s in SPLITS} if self.with_checks else None,
            decontamination=(
                self.decontaminator.params() if self.decontaminator is not None else None
            ),
        )
