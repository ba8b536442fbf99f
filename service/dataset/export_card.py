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

from service.dataset.import_records import word_slots
from service.store.diversity_report import sketch_report
from service.store.diversity_sketch import Sketch

_HIST_START = 4096  # histogram buckets to begin with; it grows to the longest story


def release_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A TinyStories_all_data record for one export row.

    `source` is the model, as in the release (null when unknown); `instruct_header` (our
    addition) keeps the TinyStories-Instruct header lines, so a JSON round trip loses none.
    `words` holds only real words, as the release's; a partial recipe whose words alone would
    take the wrong roles (a noun and an adjective read as verb and noun) also gets `recipe`
    (our addition) with each word under its role."""
    roles = {"verb": row["verb"], "noun": row["noun"], "adjective": row["adjective"]}
    words = [w for w in roles.values() if w]
    record = {
        "story": row["text"],
        "instruction": {
            "prompt:": row.get("prompt") or "",
            "words": words,
            "features": list(row["features"]),
        },
        "summary": row["summary"] or None,
        "source": row["model"] or None,
        "instruct_header": row["instruct_header"],
    }
    if "" in word_slots(roles.values()):
        record["recipe"] = {role: word or None for role, word in roles.items()}
    return record


class JsonChunks:
    """TinyStories_all_data/dataNN.json files, each a JSON list written record by record;
    numbered from `first_index`, a new file every `records_per_file` records (None: one file)."""

    def __init__(self, directory: Path, records_per_file: int | None, first_index: int = 0) -> None:
        self.dir = directory
        self.per_file = records_per_file
        self.first_index = first_index
        self.files: list[Path] = []
        self._f: Any = None
        self._n = 0

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            if self._f is None:
                path = self.dir / f"data{self.first_index + len(self.files):02d}.json"
                self.files.append(path)
                self._f = open(path, "w", encoding="utf-8")
                self._f.write("[")
                self._n = 0
            self._f.write(("," if self._n else "") + json.dumps(rec, ensure_ascii=False))
            self._n += 1
            if self.per_file is not None and self._n >= self.per_file:
                self._close_file()

    def _close_file(self) -> None:
        self._f.write("]")
        self._f.close()
        self._f = None

    def close(self) -> list[Path]:
        if self._f is not None:
            self._close_file()
        if not self.files:
            path = self.dir / f"data{self.first_index:02d}.json"
            path.write_text("[]", encoding="utf-8")
            self.files.append(path)
        return self.files


def _grown(hist: np.ndarray, size: int) -> np.ndarray:
    if len(hist) >= size:
        return hist
    out = np.zeros(max(size, 2 * len(hist)), dtype=np.int64)
    out[: len(hist)] = hist
    return out


class ExportStats:
    """Running statistics with O(1) memory in the number of rows."""

    def __init__(self) -> None:
        self.words = np.zeros(_HIST_START, dtype=np.int64)
        self.chars = np.zeros(_HIST_START, dtype=np.int64)
        self.word_total = 0
        self.char_total = 0
        self.models: Counter[str] = Counter()
        self.providers: Counter[str] = Counter()
        self.sources: Counter[str] = Counter()
        self.cost = 0.0
        self.exact_dups = 0
        self.near_dups = 0
        self.with_summary = 0
        self.rejected = 0  # stories that failed the checks (exported only when asked)
        # Of the exported stories, added by the writer a batch at a time (export_analysis).
        self.diversity = Sketch()

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one exported row in (its diversity is the batch sketch's, added apart)."""
        w = len(row["text"].split())
        c = len(row["text"])
        if max(w, c) >= len(self.chars):  # exact statistics: grow instead of capping
            self.words = _grown(self.words, c + 1)
            self.chars = _grown(self.chars, c + 1)
        self.words[w] += 1
        self.chars[c] += 1
        self.word_total += w
        self.char_total += c
        self.models[row["model"] or "unknown"] += 1
        self.providers[row["provider"] or "unknown"] += 1
        self.sources[row["source"] or "unknown"] += 1
        self.cost += row["cost_usd"]
        # By the stored verdict: an exact copy has a cluster (its first story's) as well.
        self.exact_dups += row.get("dedup_status") == "exact_duplicate"
        self.near_dups += row.get("dedup_status") == "near_duplicate"
        self.with_summary += bool(row["summary"])
        self.rejected += not row.get("accepted", True)

    @classmethod
    def merged(cls, parts: Iterable[ExportStats]) -> ExportStats:
        both = cls()
        for st in parts:
            both.diversity.add(st.diversity)
            size = max(len(both.chars), len(st.chars))
            both.words = _grown(both.words, size)
            both.chars = _grown(both.chars, size)
            both.words[: len(st.words)] += st.words
            both.chars[: len(st.chars)] += st.chars
            both.word_total += st.word_total
            both.char_total += st.char_total
            both.models.update(st.models)
            both.providers.update(st.providers)
            both.sources.update(st.sources)
            both.cost += st.cost
            both.exact_dups += st.exact_dups
            both.near_dups += st.near_dups
            both.with_summary += st.with_summary
            both.rejected += st.rejected
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
            "max": int(nz[-1]),  # exact: the histogram grows to the longest story
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
    rejected: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The ``export.json`` manifest; `decontamination` is the checker's params (None: off),
    `rejected` the stories per split that failed the checks (None: only accepted exported)."""
    both = ExportStats.merged(stats)
    total = counts["total"]
    dedup = dict(metadata.get("dedup") or {})
    dedup.update(
        {
            "exact_duplicates_exported": both.exact_dups,
            "exact_duplicate_rate": round(both.exact_dups / total, 6) if total else 0.0,
            "near_duplicates_exported": both.near_dups,
            "near_duplicate_rate": round(both.near_dups / total, 6) if total else 0.0,
        }
    )
    decon = dict(metadata.get("decontamination") or {})
    if decontamination is not None:
        decon.update(decontamination)
    decon["excluded"] = counts["excluded_contaminated"]
    provenance = dict(metadata.get("provenance") or {})
    provenance["sources"] = dict(sorted(both.sources.items()))  # of the exported stories
    # Only with rejected stories in, so the manifests of other exports stay as they were.
    checks = {} if rejected is None else {"rejected_stories": dict(rejected)}
    return {
        **{
            k: v for k, v in metadata.items() if k not in ("dedup", "decontamination", "provenance")
        },
        **checks,
        "provenance": provenance,
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
        "diversity": _card_diversity(both.diversity),
        "dedup": dedup,
        "decontamination": decon,
        "files": files,
    }


def _card_diversity(sketch: Sketch) -> dict[str, Any]:
    """Diversity of the exported stories (docs/diversity.md says what real TinyStories reads)."""
    report = sketch_report(sketch)
    used = {
        role: len({t for kind, t in sketch.terms if kind == role})
        for role in ("verb", "noun", "adjective")
    }
    return {
        "distinct": report["distinct"],
        "recipe_words_used": used,
        "features": report["features_actual"],
        "no_feature": report["no_feature"],
        "openings": {
            "distinct": report["openings"]["distinct"],
            "top": report["openings"]["top"][:5],
        },
        "length_words": report["length"],
    }


def _per_split(rejected: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {split}" for split, n in rejected.items())


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
        "diversity": manifest.get("diversity", {}),
        "decontamination": manifest["decontamination"],
        # the story template versions of the jobs that made the exported stories ([]: imported)
        "template_versions": list(manifest.get("template_versions") or []),
        "provenance": manifest.get("provenance", {}),
        "format": manifest["options"]["format"],
        "validation_fraction": manifest["options"]["validation_fraction"],
        "split_seed": manifest["options"]["seed"],
        "fingerprint": manifest["fingerprint"],
    }
    rejected = manifest.get("rejected_stories")
    if rejected is not None:
        front["rejected_stories"] = rejected
    words = manifest["token_stats"]["words_per_story"]
    chars = manifest["token_stats"]["characters_per_story"]
    fmt = manifest["options"]["format"]
    dedup = manifest["dedup"]
    held = counts.get("excluded_separator", 0)
    separator = (
        f"Stories left out for holding `<|endoftext|>` (it would split them in the text "
        f"files): {held}.\n"
        if held
        else ""
    )
    only = (
        "Format `instruct`: only stories with TinyStories-Instruct metadata (a summary, words "
        f"or features) are exported ({counts.get('excluded_no_instruct', 0)} without it left "
        "out).\n\n"
        if fmt == "instruct"
        else ""
    )
    body = (
        "# TinyStories-style dataset export\n\n"
        f"{counts['total']} stories ({counts['train']} train, {counts['validation']} validation), "
        f"{words['mean']} words per story on average (longest: {words['max']} words, "
        f"{chars['max']} characters). Splits are stable: a story's split is a "
        "hash of its normalised text and the split seed (a duplicate's, of its cluster's first "
        "story: copies never straddle the splits). All statistics are of the exported "
        "stories, after the duplicate and contamination filters.\n\n" + only + "## Layout\n\n"
        "- `dataset_dict.json`, `train/`, `validation/`: `datasets.load_from_disk(dir)`\n"
        '- `parquet/`: `datasets.load_dataset("parquet", data_dir=dir + "/parquet")`\n'
        "- `tinystories/`: files in the format of the TinyStories release "
        "(`<|endoftext|>`-separated text, TinyStories-Instruct text, `TinyStories_all_data` JSON: "
        "`data00.json` is the validation split, the test shard of llama2.c's convention, and "
        f"`data01.json` on hold the train split, {manifest['options'].get('records_per_shard')} "
        "records per file)\n"
        + (
            "- `tinystories/*.rejected.json`: the stories that failed the checks "
            f"({_per_split(rejected)}) by 0-based index in the text file beside it, which "
            "cannot mark them (the other files have `accepted` and `rejections` columns)\n"
            if rejected is not None
            else ""
        )
        + "- `export.json`: manifest with the fingerprint of the exported stories and options\n\n"
        f"Duplicates exported: {dedup['exact_duplicates_exported']} exact, "
        f"{dedup['near_duplicates_exported']} near; "
        f"stories excluded for overlap with the evaluation prompts: "
        f"{manifest['decontamination']['excluded']}.\n" + separator
    )
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + body
