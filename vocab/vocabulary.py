"""Child vocabularies: the packaged default and user files (txt, yaml, json)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import yaml

from vocab.features import FEATURES, Feature
from vocab.word_rules import normalize_word, word_problem

ROLES: tuple[str, ...] = ("noun", "verb", "adjective")
# Plural spellings accepted in yaml/json files ({"nouns": [...]}) and in txt role columns.
_ROLE_ALIASES = {
    "noun": "noun",
    "nouns": "noun",
    "n": "noun",
    "verb": "verb",
    "verbs": "verb",
    "v": "verb",
    "adjective": "adjective",
    "adjectives": "adjective",
    "adj": "adjective",
    "a": "adjective",
}
_DEFAULT_DATA = "words.tsv"


class VocabError(ValueError):
    """A vocabulary or feature file that cannot be used, located by file and line."""

    def __init__(self, file: str | Path, line: int | None, problem: str) -> None:
        self.file = str(file)
        self.line = line
        self.problem = problem
        where = self.file if line is None else f"{self.file}, line {line}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Vocabulary:
    """Words by role plus the story features recipes may ask for."""

    nouns: tuple[str, ...]
    verbs: tuple[str, ...]
    adjectives: tuple[str, ...]
    features: tuple[Feature, ...] = FEATURES
    source: str = field(default="default", compare=False)
    # What runs and jobs call it (a file's `name`, else its stem); not part of its identity.
    name: str = field(default="default", compare=False)

    @property
    def words(self) -> frozenset[str]:
        """Every word of the vocabulary, whatever its role."""
        return frozenset(self.nouns) | frozenset(self.verbs) | frozenset(self.adjectives)

    def roles(self, word: str) -> tuple[str, ...]:
        """The roles `word` has here, in the order noun, verb, adjective."""
        found = []
        for role, words in zip(ROLES, (self.nouns, self.verbs, self.adjectives), strict=True):
            if word in words:
                found.append(role)
        return tuple(found)

    def by_role(self, role: str) -> tuple[str, ...]:
        """Words of one role ("noun", "verb" or "adjective")."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        return {"noun": self.nouns, "verb": self.verbs, "adjective": self.adjectives}[role]

    def words_by_role(self) -> dict[str, list[str]]:
        """{"noun": [...], "verb": [...], "adjective": [...]}: what a job stores and sends."""
        return {role: list(self.by_role(role)) for role in ROLES}

    @cached_property
    def sha256(self) -> str:
        """Hash of what recipes are drawn from: the distinct words of each role and the
        features in order. Word order and the file's format do not change it (the sampler
        sorts), so a file and the same words sent to the API hash alike."""
        canonical = {
            "noun": sorted(set(self.nouns)),
            "verb": sorted(set(self.verbs)),
            "adjective": sorted(set(self.adjectives)),
            "features": [[f.name, f.phrase] for f in self.features],
        }
        text = json.dumps(canonical, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def identity(self) -> dict[str, Any]:
        """Name, content hash and size: what a run or a job records about its vocabulary."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "noun": len(set(self.nouns)),
            "verb": len(set(self.verbs)),
            "adjective": len(set(self.adjectives)),
        }

    def stats(self) -> dict[str, Any]:
        """Counts per role and the feature names, as `tinystories vocab stats --json` prints."""
        return {
            "noun": len(self.nouns),
            "verb": len(self.verbs),
            "adjective": len(self.adjectives),
            "features": [f.name for f in self.features],
        }


class _Builder:
    """Collects (word, role) entries from one file, rejecting bad ones with their line."""

    def __init__(self, file: str | Path) -> None:
        self.file = str(file)
        self.by_role: dict[str, dict[str, int]] = {role: {} for role in ROLES}
        self.order: dict[str, list[str]] = {role: [] for role in ROLES}
        self.features: list[Feature] = []
        self._feature_lines: dict[str, int] = {}
        self.name: str | None = None

    def error(self, line: int | None, problem: str) -> VocabError:
        return VocabError(self.file, line, problem)

    def add_word(self, word: Any, role: str, line: int | None) -> None:
        if not isinstance(word, str):
            raise self.error(line, f"a {role} must be a string, got {word!r}")
        word = normalize_word(word)
        if not word:
            raise self.error(line, f"empty word in the {role} list")
        problem = word_problem(word)
        if problem is not None:
            raise self.error(line, problem)
        seen = self.by_role[role]
        if word.lower() in seen:
            first = seen[word.lower()]
            raise self.error(line, f"duplicate {role} {word!r} (first at line {first})")
        seen[word.lower()] = line if line is not None else 0
        self.order[role].append(word)

    def add_role_word(self, word: Any, role_text: str, line: int | None) -> None:
        role = _ROLE_ALIASES.get(role_text.strip().lower())
        if role is None:
            raise self.error(
                line, f"unknown role {role_text.strip()!r} (roles: {', '.join(ROLES)})"
            )
        self.add_word(word, role, line)

    def add_feature(self, spec: Any, line: int | None) -> None:
        """A known feature by name, or a new one given as {name, phrase}."""
        if isinstance(spec, str):
            name, phrase = spec.strip(), None
        elif isinstance(spec, dict):
            unknown_keys = set(spec) - {"name", "phrase"}
            if unknown_keys:
                raise self.error(line, f"unknown feature key(s): {', '.join(sorted(unknown_keys))}")
            name, phrase = str(spec.get("name") or "").strip(), spec.get("phrase")
        else:
            raise self.error(line, f"a feature must be a name or {{name, phrase}}, got {spec!r}")
        if not name:
            raise self.error(line, "feature with an empty name")
        if name in self._feature_lines:
            raise self.error(
                line, f"duplicate feature {name!r} (first at line {self._feature_lines[name]})"
            )
        if phrase is None:
            known = {f.name: f for f in FEATURES}
            if name not in known:
                raise self.error(
                    line,
                    f"unknown feature {name!r}: give it a phrase, or use one of {', '.join(known)}",
                )
            feature = known[name]
        else:
            if not isinstance(phrase, str) or not phrase.strip():
                raise self.error(line, f"feature {name!r} has an empty phrase")
            feature = Feature(name=name, phrase=phrase.strip())
        self._feature_lines[name] = line if line is not None else 0
        self.features.append(feature)

    def build(self, *, default_features: bool) -> Vocabulary:
        order = self.order
        for role in ROLES:
            if not order.get(role):
                raise self.error(
                    None, f"no {role}s: a vocabulary needs nouns, verbs and adjectives"
                )
        features = tuple(self.features) if self.features else (FEATURES if default_features else ())
        return Vocabulary(
            nouns=tuple(order["noun"]),
            verbs=tuple(order["verb"]),
            adjectives=tuple(order["adjective"]),
            features=features,
            source=self.file,
            name=self.name or Path(self.file).stem or "custom",
        )


def _parse_txt(text: str, builder: _Builder) -> None:
    """Lines `word<TAB or space>role[,role...]` or `feature: Name[ | phrase]`; # comments."""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.lower().startswith("feature:"):
            spec = line.split(":", 1)[1].strip()
            if "|" in spec:
                name, phrase = (part.strip() for part in spec.split("|", 1))
                builder.add_feature({"name": name, "phrase": phrase}, lineno)
            else:
                builder.add_feature(spec, lineno)
            continue
        # A tab ends the word (a spreadsheet's columns); otherwise the first space does.
        parts = [p.strip() for p in line.split("\t", 1)] if "\t" in line else line.split(None, 1)
        if len(parts) == 1 or not parts[1]:
            raise builder.error(
                lineno, f"{parts[0]!r} has no role (write `word noun`, `word verb,noun`, ...)"
            )
        word, roles = parts
        role_list = [r for r in re.split(r"[,\s]+", roles) if r]
        unknown = [r for r in role_list if r.lower() not in _ROLE_ALIASES]
        if unknown and role_list[-1].lower() in _ROLE_ALIASES and "\t" not in line:
            # `ice cream noun`: the space is inside the entry, not before its role.
            word = " ".join([word, *role_list[: role_list.index(unknown[-1]) + 1]])
            role_list = role_list[role_list.index(unknown[-1]) + 1 :]
        for role in role_list:
            builder.add_role_word(word, role, lineno)


def _node_line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _parse_structured(node: yaml.Node | None, builder: _Builder) -> None:
    """A mapping {nouns: [...], verbs: [...], adjectives: [...], features: [...]}."""
    if node is None or not isinstance(node, yaml.MappingNode):
        line = _node_line(node) if node is not None else None
        raise builder.error(line, "expected a mapping with nouns, verbs, adjectives (and features)")
    for key_node, value_node in node.value:
        key = str(key_node.value).strip().lower()
        line = _node_line(key_node)
        if key.startswith("_"):  # notes such as "_note" or "_origin"
            continue
        if key == "name":
            name = value_node.value if isinstance(value_node, yaml.ScalarNode) else None
            if not isinstance(name, str) or not name.strip():
                raise builder.error(line, "name must be a non-empty text")
            builder.name = name.strip()
            continue
        if key == "features":
            if not isinstance(value_node, yaml.SequenceNode):
                raise builder.error(line, "features must be a list")
            for item in value_node.value:
                builder.add_feature(yaml.safe_load(yaml.serialize(item)), _node_line(item))
            continue
        role = _ROLE_ALIASES.get(key)
        if role is None:
            raise builder.error(
                line,
                f"unknown role {key_node.value!r} (roles: {', '.join(ROLES)}, features or name)",
            )
        if not isinstance(value_node, yaml.SequenceNode):
            raise builder.error(line, f"{key_node.value} must be a list of words")
        for item in value_node.value:
            if not isinstance(item, yaml.ScalarNode):
                raise builder.error(_node_line(item), f"a {role} must be a single word")
            builder.add_word(item.value, role, _node_line(item))


def parse_vocabulary(text: str, *, file: str | Path, fmt: str) -> Vocabulary:
    """Parse vocabulary text in format "txt", "yaml" or "json" (errors name `file`)."""
    builder = _Builder(file)
    if fmt == "txt":
        _parse_txt(text, builder)
    elif fmt in ("yaml", "json"):
        if fmt == "json":
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                raise builder.error(exc.lineno, f"invalid JSON: {exc.msg}") from None
        try:
            node = yaml.compose(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise builder.error(line, f"invalid {fmt.upper()}: {problem}") from None
        _parse_structured(node, builder)
    else:
        raise builder.error(None, f"unknown vocabulary format {fmt!r} (txt, tsv, yaml, json)")
    return builder.build(default_features=True)


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".txt", ".tsv", ""):
        return "txt"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    raise VocabError(path, None, f"unknown file type {suffix!r} (use .txt, .tsv, .yaml or .json)")


def load_vocabulary(path: str | Path) -> Vocabulary:
    """Load a user vocabulary (and optional features) from a txt/tsv, yaml or json file."""
    path = Path(path)
    fmt = _format_of(path)
    try:
        # utf-8-sig: Windows editors start UTF-8 files with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise VocabError(path, None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise VocabError(path, None, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise VocabError(path, None, f"cannot read: {exc.strerror}") from None
    return parse_vocabulary(text, file=path, fmt=fmt)


@lru_cache(maxsize=1)
def default_vocabulary() -> Vocabulary:
    """The packaged child vocabulary (vocab/data/words.tsv) with the six real features."""
    text = (Path(__file__).parent / "data" / _DEFAULT_DATA).read_text(encoding="utf-8")
    vocabulary = parse_vocabulary(text, file=f"vocab/data/{_DEFAULT_DATA}", fmt="txt")
    return Vocabulary(
        nouns=vocabulary.nouns,
        verbs=vocabulary.verbs,
        adjectives=vocabulary.adjectives,
        features=FEATURES,
        source="default",
    )


def vocabulary_from_words(
    words: Mapping[str, Sequence[str]], *, name: str, features: tuple[Feature, ...] = FEATURES
) -> Vocabulary:
    """A vocabulary from words by role ({"noun": [...], "verb": [...], "adjective": [...]}),
    normalised as a file's are (NFC, repeats dropped); ValueError naming role and item."""
    by_role: dict[str, tuple[str, ...]] = {}
    for role in ROLES:
        given = words.get(role) or ()
        if not given:
            raise ValueError(f"{role}: a vocabulary needs at least one {role}")
        normalised = [normalize_word(str(w)) for w in given]
        for i, word in enumerate(normalised):
            problem = word_problem(word)
            if problem is not None:
                raise ValueError(f"{role}.{i}: {problem}")
        by_role[role] = tuple(dict.fromkeys(normalised))
    return Vocabulary(
        nouns=by_role["noun"],
        verbs=by_role["verb"],
        adjectives=by_role["adjective"],
        features=features,
        source=name,
        name=name,
    )


def format_words_tsv(entries: Iterable[tuple[str, Iterable[str]]]) -> str:
    """Render (word, roles) pairs in the packaged words.tsv format."""
    return "".join(f"{word}\t{','.join(roles)}\n" for word, roles in entries)


@lru_cache(maxsize=1)
def basic_words() -> frozenset[str]:
    """Everyday words (function words, common lemmas) child stories use beside recipe words."""
    text = (Path(__file__).parent / "data" / "basic_words.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
