"""Prompt templates (versioned YAML data in generator/templates/) and their rendering."""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from vocab import FEATURES, Feature, Recipe

DEFAULT_TEMPLATE_VERSION = "v1"
TEMPLATES_DIR = Path(__file__).parent / "templates"

# Placeholders each kind of template must use, and may use.
_REQUIRED: dict[str, dict[str, frozenset[str]]] = {
    "story": {
        "text": frozenset({"verb", "noun", "adjective", "features_clause"}),
        "features_clause": frozenset({"features"}),
    },
    "summary": {"text": frozenset({"story"})},
}


class PromptTemplateError(ValueError):
    """A template that is missing, malformed or does not fit its kind."""


@dataclass(frozen=True)
class PromptTemplate:
    """One versioned prompt template."""

    kind: str
    version: str
    text: str
    features_clause: str = ""
    features_separator: str = ", "
    source: str = ""

    @classmethod
    def from_mapping(cls, data: Any, *, source: str) -> PromptTemplate:
        """Validate a parsed template file; errors name the template and what is wrong."""
        if not isinstance(data, dict):
            raise PromptTemplateError(f"template {source}: expected a mapping with kind and text")
        kind = data.get("kind")
        if kind not in _REQUIRED:
            raise PromptTemplateError(
                f"template {source}: unknown kind {kind!r} (kinds: {', '.join(_REQUIRED)})"
            )
        for key, value in data.items():
            if key in ("kind", "version"):
                continue
            if key not in ("text", "features_clause", "features_separator"):
                raise PromptTemplateError(f"template {source}: unknown key {key!r}")
            if not isinstance(value, str):
                raise PromptTemplateError(f"template {source}: {key} must be a string")
        template = cls(
            kind=kind,
            version=str(data.get("version") or ""),
            text=data.get("text") or "",
            features_clause=data.get("features_clause", ""),
            features_separator=data.get("features_separator", ", "),
            source=source,
        )
        for field_name, required in _REQUIRED[kind].items():
            _check_placeholders(getattr(template, field_name), required, source, field_name)
        return template

    def render(self, **values: str) -> str:
        """Fill the text; every placeholder must be given."""
        return self.text.format(**values)


def _check_placeholders(text: str, required: frozenset[str], source: str, field: str) -> None:
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise PromptTemplateError(
            f"template {source}: {field} is not a valid format string: {exc}"
        ) from None
    missing = sorted(required - used)
    if missing:
        names = ", ".join("{" + m + "}" for m in missing)
        raise PromptTemplateError(f"template {source}: {field} is missing placeholder {names}")
    unknown = sorted(used - required)
    if unknown:
        names = ", ".join("{" + u + "}" for u in unknown)
        allowed = ", ".join("{" + r + "}" for r in sorted(required))
        raise PromptTemplateError(
            f"template {source}: {field} has unknown placeholder {names} (allowed: {allowed})"
        )


def available_versions(kind: str) -> list[str]:
    """Packaged versions of one kind of template, e.g. ["v1"]."""
    prefix = f"{kind}-"
    return sorted(p.stem[len(prefix) :] for p in TEMPLATES_DIR.glob(f"{prefix}*.yaml"))


def load_template_file(path: str | Path) -> PromptTemplate:
    """A template from any YAML file (a user's own prompt)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptTemplateError(f"template {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise PromptTemplateError(f"template {path}: invalid YAML: {exc}") from None
    return PromptTemplate.from_mapping(data, source=str(path))


@lru_cache(maxsize=32)
def load_template(kind: str = "story", version: str = DEFAULT_TEMPLATE_VERSION) -> PromptTemplate:
    """A packaged template by kind ("story" or "summary") and version; or a YAML file path."""
    if version.endswith((".yaml", ".yml")):
        template = load_template_file(version)
        if template.kind != kind:
            raise PromptTemplateError(
                f"template {version}: is a {template.kind} template, expected {kind}"
            )
        return template
    if kind not in _REQUIRED:
        raise PromptTemplateError(f"unknown template kind {kind!r} (kinds: {', '.join(_REQUIRED)})")
    path = TEMPLATES_DIR / f"{kind}-{version}.yaml"
    if not path.is_file():
        known = ", ".join(available_versions(kind)) or "none"
        raise PromptTemplateError(
            f"unknown {kind} template version {version!r} (available: {known})"
        )
    template = load_template_file(path)
    if template.kind != kind:
        raise PromptTemplateError(
            f"template {path}: is a {template.kind} template, expected {kind}"
        )
    return template


def feature_phrases(names: tuple[str, ...] | list[str], features: tuple[Feature, ...]) -> list[str]:
    """Prompt phrasings of feature names; ValueError naming an unknown one."""
    by_name = {f.name: f.phrase for f in features}
    phrases = []
    for name in names:
        if name not in by_name:
            raise ValueError(f"unknown feature {name!r} (known features: {', '.join(by_name)})")
        phrases.append(by_name[name])
    return phrases


def render_story_prompt(
    recipe: Recipe,
    template_version: str = DEFAULT_TEMPLATE_VERSION,
    *,
    features: tuple[Feature, ...] = FEATURES,
) -> str:
    """The story-writing prompt for one recipe."""
    template = load_template("story", template_version)
    phrases = feature_phrases(recipe.features, features)
    clause = ""
    if phrases:
        clause = template.features_clause.format(features=template.features_separator.join(phrases))
    return template.render(
        verb=recipe.verb, noun=recipe.noun, adjective=recipe.adjective, features_clause=clause
    )


def render_summary_prompt(story: str, template_version: str = DEFAULT_TEMPLATE_VERSION) -> str:
    """The prompt asking for a one or two sentence summary of `story`."""
    template = load_template("summary", template_version)
    return template.render(story=story.strip())
