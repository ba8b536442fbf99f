"""Reading an export directory: the service's dataset dir or release-format text files.

The grader accepts what the trainer trains on (`trainer.data.load_export`): a
`datasets.save_to_disk` directory (dataset_dict.json), or one pair of plain-story text files
of the trainer's layouts (`train.txt` + `validation.txt`, the release's names, ...) separated by
`<|endoftext|>`. The trainer's own layout finder and reader are used, so both accept the same
directories and split a file into the same stories. Stories that failed the checks (an export
made with --include-rejected) are left out, as the trainer leaves them out by default: the
`accepted` column of a dataset, the `*.rejected.json` lists beside text files.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trainer.config import TrainerError
from trainer.textdata import (
    TextSplit,
    check_sidecars,
    layout_names,
    read_text_split,
    text_layouts,
)

PLAIN_LAYOUTS = layout_names("plain")


class ExportDirError(ValueError):
    """The --data directory is not an export."""


class TextExport(Mapping):
    """Splits of a text-file export, each read on first use.

    The release's train file is 1.9 GB: `grade-loss` and pairwise need only the validation
    split, so the train file is read only when memorization asks for it.
    """

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self._splits: dict[str, TextSplit] = {}

    def __getitem__(self, split: str) -> TextSplit:
        if split not in self.files:
            raise KeyError(split)
        if split not in self._splits:
            try:  # the trainer's reader and its messages (a byte not UTF-8, a damaged list)
                self._splits[split] = read_text_split(self.files[split]).accepted_only()
            except TrainerError as exc:
                raise ExportDirError(str(exc)) from None
        return self._splits[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def _load_text_export(p: Path) -> TextExport:
    layouts = text_layouts(p, "plain")  # the trainer's rule: one complete pair of files
    if not layouts:
        raise ExportDirError(
            f"{p} is not an export directory (no dataset_dict.json, nor text files: "
            f"{PLAIN_LAYOUTS})"
        )
    if len(layouts) > 1:
        names = " and ".join(f"{f['train'].name} + {f['validation'].name}" for f in layouts)
        raise ExportDirError(f"{p} holds several text layouts ({names}); keep one")
    try:
        check_sidecars(layouts[0])
    except TrainerError as exc:
        raise ExportDirError(str(exc)) from None
    export = TextExport(layouts[0])
    valid = export["validation"]
    if valid.num_rows == 0:
        why = f"accepted stories ({len(valid.rejected)} rejected)" if valid.rejected else "stories"
        raise ExportDirError(f"{p}: {layouts[0]['validation'].name} holds no {why}")
    return export


def load_export(path: str | Path) -> Any:
    """The splits of an export dir: a DatasetDict, or a TextExport for text files."""
    p = Path(path)
    if not p.is_dir():
        raise ExportDirError(f"export directory {p} does not exist")
    if not (p / "dataset_dict.json").is_file():
        return _load_text_export(p)
    from datasets import load_from_disk

    try:
        dd = load_from_disk(str(p))
    except (OSError, ValueError) as exc:
        raise ExportDirError(f"{p}: cannot load the dataset ({str(exc).splitlines()[0]})") from exc
    if "validation" not in dd:
        raise ExportDirError(f"{p}: export has no validation split")
    return dd


def has_column(dd: Any, split: str, name: str) -> bool:
    return split in dd and name in dd[split].column_names


def column(dd: Any, split: str, name: str, limit: int | None = None) -> list:
    if split not in dd:
        raise ExportDirError(f"export has no {split!r} split")
    ds = dd[split]
    if name not in ds.column_names:
        raise ExportDirError(f"export split {split!r} has no {name!r} column")
    if isinstance(ds, TextSplit):
        return ds.texts[:limit]
    if "accepted" in ds.column_names:  # the stories the trainer trains on by default
        ds = ds.select(np.flatnonzero(ds["accepted"]), keep_in_memory=True)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return list(ds[name])
