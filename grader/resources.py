"""Packaged, versioned grader data: evaluation prompts, judge rubrics, capability suites."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml


class GraderDataError(ValueError):
    """A prompt set, rubric or suite file is missing or malformed."""


class GraderOptionError(GraderDataError):
    """An option value that cannot work: the command line is wrong (exit 2, not 1)."""


@dataclass(frozen=True)
class Rubric:
    version: str
    categories: tuple[str, ...]
    turns: tuple[str, ...]
    age_groups: dict[str, str]
    correction: str | None = None  # the one follow-up turn after an unreadable answer


@dataclass(frozen=True)
class CapabilityItem:
    suite: str
    prompt: str
    expect: tuple[str, ...]
    supplied: bool
    right: str | None = None  # a continuation the rule must pass (tested)
    wrong: str | None = None  # a continuation the rule must fail (tested)


@dataclass(frozen=True)
class CapabilitySuites:
    version: str
    window: int
    items: tuple[CapabilityItem, ...]

    def names(self) -> list[str]:
        return list(dict.fromkeys(item.suite for item in self.items))


def _read_yaml(name: str | Path) -> object:
    path = Path(name)
    try:
        if path.is_absolute() or path.exists():
            text = path.read_text(encoding="utf-8")
        else:
            text = resources.files("grader.data").joinpath(str(name)).read_text(encoding="utf-8")
    except (OSError, FileNotFoundError) as exc:
        raise GraderDataError(f"{name}: cannot read ({exc})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GraderDataError(f"{name}: invalid YAML ({exc})") from exc


def load_evaluation_prompts(path: str | Path | None = None) -> list[str]:
    """The 44 GPT-Eval story beginnings (or a user file: a YAML list of strings)."""
    name = path or "evaluation_prompts.yaml"
    data = _read_yaml(name)
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise GraderDataError(f"{name}: expected a YAML list of prompt strings")
    prompts = [p for p in data if p.strip()]
    if not prompts:
        raise GraderDataError(f"{name}: the prompt set is empty")
    return prompts


def load_rubric(name: str = "gpt_eval_rubric.yaml") -> Rubric:
    data = _read_yaml(name)
    if not isinstance(data, dict) or not data.get("version") or not data.get("turns"):
        raise GraderDataError(f"{name}: a rubric needs `version` and `turns`")
    return Rubric(
        version=str(data["version"]),
        categories=tuple(data.get("categories") or ()),
        turns=tuple(str(t) for t in data["turns"]),
        age_groups={str(k): str(v) for k, v in (data.get("age_groups") or {}).items()},
        correction=str(data["correction"]) if data.get("correction") else None,
    )


def load_capability_suites(
    path: str | Path | None = None, only: list[str] | None = None
) -> CapabilitySuites:
    name = path or "capability_prompts.yaml"
    data = _read_yaml(name)
    if not isinstance(data, dict) or not isinstance(data.get("suites"), dict):
        raise GraderDataError(f"{name}: expected a mapping with `suites`")
    items = []
    for suite, entries in data["suites"].items():
        if only and suite not in only:
            continue
        for entry in entries or []:
            if not isinstance(entry, dict) or not str(entry.get("prompt", "")).strip():
                raise GraderDataError(f"{name}: suite {suite!r} has an entry without a prompt")
            items.append(
                CapabilityItem(
                    suite=str(suite),
                    prompt=str(entry["prompt"]),
                    expect=tuple(str(e) for e in entry.get("expect") or ()),
                    supplied=bool(entry.get("supplied", False)),
                    right=entry.get("right"),
                    wrong=entry.get("wrong"),
                )
            )
    if only:
        unknown = sorted(set(only) - {i.suite for i in items})
        if unknown:
            raise GraderOptionError(f"{name}: unknown suite(s) {', '.join(unknown)}")
    if not items:
        raise GraderDataError(f"{name}: no capability prompts")
    return CapabilitySuites(
        version=str(data.get("version", "unversioned")),
        window=int(data.get("window", 12)),
        items=tuple(items),
    )
