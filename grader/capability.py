"""Knowledge, reasoning and context-tracking suites: greedy completions scored by rules."""

from __future__ import annotations

import math
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


def wilson_ci(passed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval: unlike passed/n +- se it stays inside [0, 1] and is not [0, 0]
    for 0 of 11 (11 items say little about a model)."""
    p = passed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # Rounded: floating error would otherwise print 0 passes as a lower bound of 3e-17.
    return round(max(0.0, centre - half), 12), round(min(1.0, centre + half), 12)


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
        t["ci95"] = list(wilson_ci(t["passed"], t["n"])) if t["n"] else None
        js = t.pop("judge_consistency")
        t["judge_consistency"] = sum(js) / len(js) if js else None
    return table
