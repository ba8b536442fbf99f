"""Export side files: statistics, manifest (``export.json``), dataset card (``README.md``)
and the ``TinyStories_all_data`` JSON records.

Used by :mod:`service.dataset.export_writer`; nothing here holds more than one row at a time,
so none of it adds memory per story.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

_HIST_MAX = 4096  # word/char counts above this share the last histogram bucket


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


class JsonChunks:
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


class ExportStats:
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

    @classmethod
    def merged(cls, parts: Iterable[ExportStats]) -> ExportStats:
        both = cls()
        for st in parts:
            both.words += st.words
            both.chars += st.chars
            both.word_total += st.word_total
            both.char_total += st.char_total
            both.models.update(st.models)
            both.providers.update(st.providers)
            both.cost += st.cost
            both.near_dups += st.near_dups
            both.with_summary += st.with_summary
        return both

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


def build_manifest(
    *,
    format_version: int,
    fingerprint: str,
    options: Mapping[str, Any],
    counts: dict[str, int],
    stats: Iterable[ExportStats],
    files: list[str],
    metadata: Mapping[str, Any],
    decontamination: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ``export.json`` manifest; `decontamination` is the checker's params (None: off)."""
    both = ExportStats.merged(stats)
    total = counts["total"]
    dedup = dict(metadata.get("dedup") or {})
    dedup.update(
        {
            "near_duplicates_exported": both.near_dups,
            "near_duplicate_rate": round(both.near_dups / total, 6) if total else 0.0,
        }
    )
    decon = dict(metadata.get("decontamination") or {})
    if decontamination is not None:
        decon.update(decontamination)
    decon["excluded"] = counts["excluded_contaminated"]
    return {
        **{k: v for k, v in metadata.items() if k not in ("dedup", "decontamination")},
        "format_version": format_version,
        "fingerprint": fingerprint,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": dict(options),
        "counts": counts,
        "token_stats": both.token_stats(),
        "models": dict(both.models.most_common()),
        "providers": dict(both.providers.most_common()),
        "cost_usd": round(both.cost, 6),
        "with_summary": both.with_summary,
        "dedup": dedup,
        "decontamination": decon,
        "files": files,
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
