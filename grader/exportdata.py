"""Reading an exported dataset directory (`datasets.save_to_disk` layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ExportDirError(ValueError):
    """The --data directory is not an export."""


def load_export(path: str | Path) -> Any:
    """The DatasetDict of an export dir (needs the `dataset_dict.json` that export writes)."""
    p = Path(path)
    if not (p / "dataset_dict.json").is_file():
        raise ExportDirError(f"{p} is not an export directory (no dataset_dict.json)")
    from datasets import load_from_disk

    try:
        dd = load_from_disk(str(p))
    except (OSError, ValueError) as exc:
        raise ExportDirError(f"{p}: cannot load the dataset ({str(exc).splitlines()[0]})") from exc
    if "validation" not in dd:
        raise ExportDirError(f"{p}: export has no validation split")
    return dd


def column(dd: Any, split: str, name: str, limit: int | None = None) -> list:
    if split not in dd:
        raise ExportDirError(f"export has no {split!r} split")
    ds = dd[split]
    if name not in ds.column_names:
        raise ExportDirError(f"export split {split!r} has no {name!r} column")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return list(ds[name])
