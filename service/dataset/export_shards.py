"""One split's files in an export directory: parquet shards, the saved dataset's Arrow files
(what ``DatasetDict.save_to_disk`` writes, with its ``state.json`` / ``dataset_info.json``) and
the TinyStories release text files, all streamed from the same row batches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

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
# Added when rejected stories are exported: whether a story passed, and the checks it failed.
CHECK_COLUMNS = ("accepted", "rejections")
# The release text files cannot carry a flag without breaking the tools that read them, so an
# export with rejected stories lists them beside each file, in TinyStories-train.rejected.json:
# {"format", "version", "stories", "sha256" of the text file, "rejected": 0-based story indices}.
# trainer/textdata.py reads it (the trainer may not import the service): keep the two in step.
REJECTED_SUFFIX = ".rejected.json"
REJECTED_FORMAT = "tinystories-rejected"
REJECTED_VERSION = 1


def holds_separator(row: dict[str, Any]) -> bool:
    """Whether the release text of a row holds the separator: written as is, it would end the
    story early and the rest would read back as a story (or a broken Instruct record) of its own."""
    return SEPARATOR in row["text"] or SEPARATOR in row["instruct_text"]


def rejected_sidecar(text_file: Path) -> Path:
    """The file listing the rejected stories of `text_file` (TinyStories-train.rejected.json)."""
    return text_file.with_name(text_file.stem + REJECTED_SUFFIX)


class ReleaseText:
    """One release text file; with `with_checks`, also its rejected-stories sidecar.

    Stories are counted as readers split the file (on the separator, blank pieces skipped), and
    the bytes written are hashed, so a reader can tell that the sidecar describes this file."""

    def __init__(self, path: Path, with_checks: bool) -> None:
        self.path = path
        self.with_checks = with_checks
        self._f = open(path, "wb")
        self._sha = hashlib.sha256()
        self.stories = 0
        self.rejected: list[int] = []

    def write(self, texts: list[str], accepted: list[bool]) -> None:
        data = "".join(f"{t}\n{SEPARATOR}\n" for t in texts).encode("utf-8")
        self._f.write(data)
        if not self.with_checks:
            return
        self._sha.update(data)
        for text, ok in zip(texts, accepted, strict=True):
            if text.strip():
                if not ok:
                    self.rejected.append(self.stories)
                self.stories += 1

    def close(self) -> None:
        """Close the file, and write the sidecar when rejected stories are exported."""
        self._f.close()
        if not self.with_checks:
            return
        listing = {
            "format": REJECTED_FORMAT,
            "version": REJECTED_VERSION,
            "stories": self.stories,
            "sha256": self._sha.hexdigest(),
            "rejected": self.rejected,
        }
        rejected_sidecar(self.path).write_text(json.dumps(listing) + "\n", encoding="utf-8")


def columns(with_checks: bool = False) -> tuple[str, ...]:
    """The export's columns, with `accepted` and `rejections` when rejected stories are in."""
    return (*COLUMNS, *CHECK_COLUMNS) if with_checks else COLUMNS


def arrow_schema(with_checks: bool = False) -> Any:
    import pyarrow as pa

    fields = [pa.field(c, pa.string(), nullable=False) for c in STRING_COLUMNS]
    fields += [
        pa.field("features", pa.list_(pa.string()), nullable=False),
        pa.field("cost_usd", pa.float64(), nullable=False),
        pa.field("dedup_cluster", pa.string(), nullable=True),
        pa.field("story_hash", pa.string(), nullable=False),
    ]
    if with_checks:
        fields += [
            pa.field("accepted", pa.bool_(), nullable=False),
            pa.field("rejections", pa.list_(pa.string()), nullable=False),
        ]
    return pa.schema(fields)


def datasets_schema(with_checks: bool = False) -> Any:
    """The schema of the saved Arrow files: what ``datasets`` writes for the export features
    (every field nullable, the features JSON in the ``huggingface`` schema metadata)."""
    from datasets import Features

    return Features.from_arrow_schema(arrow_schema(with_checks)).arrow_schema


def write_dataset_files(
    split_dir: Path, fingerprint: str, n_files: int, with_checks: bool = False
) -> None:
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
    info = asdict(DatasetInfo(features=Features.from_arrow_schema(arrow_schema(with_checks))))
    (split_dir / "dataset_info.json").write_text(
        json.dumps({k: info[k] for k in sorted(info)}, indent=2), encoding="utf-8"
    )


class SplitWriter:
    """Parquet shards, the matching saved-dataset Arrow files and release text for one split."""

    def __init__(self, root: Path, split: str, shard_rows: int, with_checks: bool = False) -> None:
        self.root = root
        self.split = split
        self.shard_rows = shard_rows
        self.columns = columns(with_checks)
        self.shards: list[Path] = []
        self.arrow_files: list[Path] = []
        self._writer: Any = None
        self._arrow: Any = None
        self._in_shard = 0
        self._schema = arrow_schema(with_checks)
        self._arrow_schema = datasets_schema(with_checks)
        (root / split).mkdir()
        self.rows = 0
        self.texts = [
            ReleaseText(root / "tinystories" / n, with_checks) for n in RELEASE_NAMES[split]
        ]

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

        # The caller leaves such rows out (and counts them); never write a broken release file.
        if bad := next((r for r in rows if holds_separator(r)), None):
            raise ValueError(f"row {bad['id']}: its text holds the {SEPARATOR} separator")
        start = 0
        while start < len(rows):
            if self._writer is None:
                self._open_shard()
            take = rows[start : start + self.shard_rows - self._in_shard]
            cols = {c: [r[c] for r in take] for c in self.columns}
            table = pa.Table.from_pydict(cols, schema=self._schema)
            self._writer.write_table(table)
            # same buffers, the datasets schema: no copy
            self._arrow.write_table(pa.Table.from_arrays(table.columns, schema=self._arrow_schema))
            self._in_shard += len(take)
            start += len(take)
            if self._in_shard >= self.shard_rows:
                self._close_shard()
        accepted = [r.get("accepted", True) for r in rows]
        for release, column in zip(self.texts, ("text", "instruct_text"), strict=True):
            release.write([r[column] for r in rows], accepted)
        self.rows += len(rows)

    def close(self) -> list[Path]:
        if self._writer is None and not self.shards:  # keep the schema even for an empty split
            self._open_shard()
        if self._writer is not None:
            self._close_shard()
        for release in self.texts:
            release.close()
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
