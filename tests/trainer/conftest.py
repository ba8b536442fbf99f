"""Shared fixtures: a small export-shaped dataset directory built from real stories."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data" / "tinystories-300.txt"


def load_stories() -> list[str]:
    text = DATA.read_text()
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()]


def _record(i: int, story: str) -> dict:
    words = [w.strip(".,!?\"'").lower() for w in story.split()[:3]]
    header = f"Words: {', '.join(words)}\nFeatures: Dialogue\n"
    return {
        "id": f"s{i:05d}",
        "text": story,
        "instruct_text": f"{header}Story: \n\n{story}",
        "summary": "",
        "instruction": header,
        "verb": "play",
        "noun": "ball",
        "adjective": "happy",
        "features": ["Dialogue"],
        "model": "reference",
        "provider": "reference",
        "source": "TinyStories-train",
        "cost_usd": 0.0,
        "dedup_cluster": None,
        "story_hash": hashlib.sha256(story.encode()).hexdigest(),
    }


def make_export(
    path: Path,
    *,
    n_train: int = 270,
    n_valid: int = 30,
    empty: str = "",
    rejected: tuple[int, ...] | None = None,
) -> Path:
    """Save an export-shaped DatasetDict (the columns of the export contract) at `path`.

    `rejected` (story indices) makes an --include-rejected export: with `accepted` and
    `rejections` columns, those stories marked as failing a check.
    """
    from datasets import Dataset, DatasetDict

    stories = load_stories()
    rows = [_record(i, s) for i, s in enumerate(stories)]
    if rejected is not None:
        for i, row in enumerate(rows):
            row["accepted"] = i not in rejected
            row["rejections"] = [] if row["accepted"] else ["too_short"]
    train, valid = rows[:n_train], rows[n_train : n_train + n_valid]
    splits = {"train": train, "validation": valid}
    if empty:
        splits[empty] = []
    dd = DatasetDict(
        {
            name: Dataset.from_list(r) if r else Dataset.from_dict({k: [] for k in rows[0]})
            for name, r in splits.items()
        }
    )
    dd.save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export(tmp_path_factory.mktemp("export") / "export")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Tiny models gain nothing from more threads, and OpenMP spinning collapses when other
    # test processes share the cores.
    torch.set_num_threads(1)
