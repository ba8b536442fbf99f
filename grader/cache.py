"""Append-only JSONL caches of judgments and completions: an interrupted or larger run resumes
where the last one stopped."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def judgment_key(judge_model: str, rubric_version: str, prompt: str, completion: str) -> str:
    payload = json.dumps([judge_model, rubric_version, prompt, completion], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def completion_key(
    weights_sha: str, prompt: str, settings: dict, seed: int, sample_index: int
) -> str:
    """A completion is a function of the weights, the prompt, the sampling settings and seed.

    `sample_index` is the j-th sample of that prompt, so `--k 10` reuses the 2 samples of a
    `--k 2` run and generates 8 more. Batch size is left out: it changes speed, not the model.
    """
    relevant = {k: v for k, v in settings.items() if k != "batch_size"}
    payload = json.dumps([weights_sha, prompt, relevant, seed, sample_index], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JsonlCache:
    """One JSON object per line, keyed by `key`; the last line for a key wins."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._entries: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        bad = 0
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    # A run killed mid-write leaves a torn last line; the judgment is redone.
                    bad += 1
        log.info("judge_cache_loaded path=%s entries=%d skipped=%d", self.path, len(self), bad)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put(self, entry: dict) -> None:
        self.put_many([entry])

    def put_many(self, entries: list[dict]) -> None:
        """Append and fsync once: a crash loses at most the batch being written."""
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for entry in entries:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for entry in entries:
            self._entries[entry["key"]] = entry


JudgmentCache = JsonlCache
CompletionCache = JsonlCache
