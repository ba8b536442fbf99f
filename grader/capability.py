"""Knowledge, reasoning and context-tracking suites: greedy completions scored by rules."""

from __future__ import annotations

import re

from grader.generation import GenerationSettings, generate
from grader.models import LoadedModel
from grader.resources import CapabilityItem, CapabilitySuites

# Answers sit in the first few words; 24 tokens leave room for them and nothing else.
CAPABILITY_SETTINGS = GenerationSettings(temperature=0.0, max_new_tokens=24)


def rule_passes(item: CapabilityItem, completion: str, window: int) -> bool | None:
    """True if an expected phrase is in the completion's first `window` words; None if no rule."""
    if not item.expect:
        return None
    head = " ".join(completion.split()[:window])
    return any(
        re.search(rf"(?<!\w){re.escape(e)}(?!\w)", head, flags=re.IGNORECASE) for e in item.expect
    )


def run_suites(
    lm: LoadedModel, suites: CapabilitySuites, settings: GenerationSettings | None = None
) -> list[dict]:
    s = settings or CAPABILITY_SETTINGS
    outs = generate(lm, [i.prompt for i in suites.items], s)
    rows = []
    for item, out in zip(suites.items, outs, strict=True):
        rows.append(
            {
                "suite": item.suite,
                "prompt": item.prompt,
                "completion": out.text,
                "expect": list(item.expect),
                "rule_supplied": item.supplied,
                "passed": rule_passes(item, out.text, suites.window),
            }
        )
    return rows


def suite_table(rows: list[dict]) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for r in rows:
        t = table.setdefault(r["suite"], {"n": 0, "passed": 0, "judge_consistency": []})
        if r["passed"] is not None:
            t["n"] += 1
            t["passed"] += int(r["passed"])
        if r.get("judge_consistency") is not None:
            t["judge_consistency"].append(r["judge_consistency"])
    for t in table.values():
        t["accuracy"] = t["passed"] / t["n"] if t["n"] else None
        js = t.pop("judge_consistency")
        t["judge_consistency"] = sum(js) / len(js) if js else None
    return table
