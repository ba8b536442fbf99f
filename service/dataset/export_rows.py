"""One exported row: its checked, defaulted fields and its split; the export's errors."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from service.dataset.export_shards import SEPARATOR, STORY_MARKER, STRING_COLUMNS
from service.dataset.import_records import instruct_header_of
from service.dataset.minhash import text_hash


class ExportError(ValueError):
    """Bad export options or rows; the message names the field."""


class EmptyExportError(ExportError):
    """Too few stories for a dataset (a split would be empty); says what was left out."""

    def __init__(self, counts: Mapping[str, int], *, split: str, validation_fraction: float):
        self.counts = dict(counts)
        self.split = split
        self.validation_fraction = validation_fraction
        super().__init__(self.describe())

    def describe(self, rejected: int = 0, reasons: Mapping[str, int] | None = None) -> str:
        """The message; with the `rejected` stories the filters left out and their checks."""
        c = self.counts
        top = sorted((reasons or {}).items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        why = f" ({', '.join(f'{k} {v}' for k, v in top)})" if top else ""
        if c["read"] == 0 and rejected:
            return (
                f"no accepted stories: all {rejected} were rejected{why}; "
                "--include-rejected exports them with their checks"
            )
        if c["read"] == 0:
            return "no stories match the export filters"
        notes = [f"{rejected} rejected{why}"] if rejected else []
        if c["excluded_contaminated"]:
            notes.append(
                f"{c['excluded_contaminated']} left out as overlapping the evaluation prompts "
                "(--no-decontaminate keeps them)"
            )
        if c.get("excluded_separator"):
            notes.append(f"{c['excluded_separator']} left out for holding {SEPARATOR}")
        if c.get("excluded_no_instruct"):
            notes.append(
                f"{c['excluded_no_instruct']} left out for lack of Instruct metadata "
                "(--format plain keeps them)"
            )
        kind = "accepted " if rejected else ""
        noted = f" ({'; '.join(notes)})" if notes else ""
        if c["total"] == 0:
            return f"no {kind}story left to export{noted}"
        if c["total"] == 1:
            return (
                f"only 1 {kind}story to export{noted}: a dataset needs at least 2, "
                "one for each split"
            )
        return (
            f"the {self.split} split would be empty ({c['total']} {kind}stories exported, "
            f"validation_fraction={self.validation_fraction}{'; ' if notes else ''}"
            f"{'; '.join(notes)}): export more stories or change validation_fraction"
        )


def split_of(story_hash: str, *, seed: int, validation_fraction: float) -> str:
    """Stable split: the same story hash, seed and fraction always land in the same split.

    Pass a duplicate the hash of its cluster's root, so a cluster never straddles the splits."""
    digest = hashlib.sha256(f"{seed}:{story_hash}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "validation" if u < validation_fraction else "train"


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults and check types so every row matches the export schema."""
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ExportError(f"row {row.get('id')!r}: field 'text' must be a non-empty string")
    out: dict[str, Any] = {}
    for c in STRING_COLUMNS:
        v = row.get(c)
        out[c] = "" if v is None else str(v)
    out["text"] = text.strip()
    out["story_hash"] = str(row.get("story_hash") or text_hash(text))
    if not out["id"]:
        out["id"] = out["story_hash"][:16]
    feats = row.get("features") or []
    if isinstance(feats, str) or not isinstance(feats, list | tuple):
        raise ExportError(f"row {out['id']}: field 'features' must be a list of strings")
    out["features"] = [str(f) for f in feats]
    # The stored header, else one made from the summary, words and features (a story imported
    # from JSON or generated without one still gets them in the Instruct files).
    out["instruct_header"] = instruct_header_of(
        instruction=out["instruction"],
        summary=out["summary"],
        words=[out["verb"], out["noun"], out["adjective"]],
        features=out["features"],
    )
    if not out["instruct_text"]:
        out["instruct_text"] = out["instruct_header"] + STORY_MARKER + out["text"]
    try:
        out["cost_usd"] = float(row.get("cost_usd") or 0.0)
    except (TypeError, ValueError):
        raise ExportError(f"row {out['id']}: field 'cost_usd' must be a number") from None
    cluster = row.get("dedup_cluster")
    out["dedup_cluster"] = None if cluster is None else str(cluster)
    # unique / near_duplicate / exact_duplicate (None: not checked); counted in the card only
    out["dedup_status"] = row.get("dedup_status")
    # A duplicate's split follows its cluster root's text hash (the store's `cluster_hash`), so
    # near copies never sit on both sides; a story that is no duplicate keeps its own hash, and
    # with it the split earlier exports gave it.
    out["cluster_hash"] = str(row["cluster_hash"]) if row.get("cluster_hash") else None
    # Exported only with rejected stories; a row without them passed its checks.
    out["accepted"] = bool(row.get("accepted", True))
    rejections = row.get("rejections") or []
    if isinstance(rejections, str) or not isinstance(rejections, list | tuple):
        raise ExportError(f"row {out['id']}: field 'rejections' must be a list of check names")
    out["rejections"] = [str(r) for r in rejections]
    out["prompt"] = row.get("prompt")  # release JSON only, not a parquet column
    return out
