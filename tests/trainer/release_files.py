"""Release-format text files as an export writes them, with the lists of rejected stories that
an --include-rejected export puts beside each (format: trainer/textdata.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.trainer.conftest import load_stories


def write_release_file(
    path: Path, stories: Sequence[str], rejected: Iterable[int] | None = None
) -> Path:
    """`stories` as the export writes them; with `rejected` (0-based indices), its sidecar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{s}\n<|endoftext|>\n" for s in stories).encode()
    path.write_bytes(data)
    if rejected is not None:
        listing = {
            "format": "tinystories-rejected",
            "version": 1,
            "stories": len(stories),
            "sha256": hashlib.sha256(data).hexdigest(),
            "rejected": sorted(rejected),
        }
        sidecar(path).write_text(json.dumps(listing))
    return path


def sidecar(text_file: Path) -> Path:
    return text_file.with_name(text_file.stem + ".rejected.json")


def make_text_export(
    path: Path,
    *,
    n_train: int = 40,
    n_valid: int = 10,
    rejected: tuple[int, ...] | None = None,
    stories: Sequence[str] | None = None,
) -> Path:
    """TinyStories-train.txt + TinyStories-valid.txt in `path`; `rejected` are indices into all
    the stories (train first), as conftest.make_export takes them."""
    stories = list(stories if stories is not None else load_stories())
    train, valid = stories[:n_train], stories[n_train : n_train + n_valid]
    marked = None if rejected is None else set(rejected)
    write_release_file(
        path / "TinyStories-train.txt",
        train,
        None if marked is None else [i for i in marked if i < n_train],
    )
    write_release_file(
        path / "TinyStories-valid.txt",
        valid,
        None
        if marked is None
        else [i - n_train for i in marked if n_train <= i < n_train + n_valid],
    )
    return path
