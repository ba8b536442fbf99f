"""Reading an export directory: the service's dataset dir or release-format text files.

The grader accepts what the trainer trains on (`trainer.data.load_export`): a
`datasets.save_to_disk` directory (dataset_dict.json), or `train.txt` and `validation.txt` (or
`valid.txt`, or the release's `TinyStories-train.txt` / `TinyStories-valid.txt`) holding plain
stories separated by `<|endoftext|>`. Text files are read with the trainer's own reader, so
both split a file into the same stories.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from trainer.data import TEXT_FILES, TextSplit

# The TinyStories release's own file names. Listed here as well as taken from the trainer so
# the grader reads a downloaded release whether or not trainer.data lists them.
_RELEASE_FILES = {"train": ("TinyStories-train.txt",), "validation": ("TinyStories-valid.txt",)}


class ExportDirError(ValueError):
    """The --data directory is not an export."""


def text_file_names(split: str) -> tuple[str, ...]:
    """File names a text export may use for a split, in the order they are looked for."""
    return tuple(dict.fromkeys((*TEXT_FILES.get(split, ()), *_RELEASE_FILES[split])))


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
            try:
                self._splits[split] = TextSplit(self.files[split])
            except (OSError, UnicodeDecodeError) as exc:
                raise ExportDirError(f"{self.files[split]}: cannot read it ({exc})") from exc
        return self._splits[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def _load_text_export(p: Path) -> TextExport:
    found = {
        split: next((p / n for n in text_file_names(split) if (p / n).is_file()), None)
        for split in ("train", "validation")
    }
    missing = [" or ".join(text_file_names(s)) for s, f in found.items() if f is None]
    if missing:
        # Both splits, as the trainer asks: the export a model was trained on has both.
        raise ExportDirError(
            f"{p} is not an export directory (no dataset_dict.json, "
            f"nor text files {', '.join(missing)})"
        )
    files = {s: f for s, f in found.items() if f is not None}
    export = TextExport(files)
    if export["validation"].num_rows == 0:
        raise ExportDirError(f"{p}: {files['validation'].name} holds no stories")
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
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return list(ds[name])
