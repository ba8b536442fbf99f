"""Evaluation-set decontamination: word n-gram overlap between a story and evaluation prompts.

The default evaluation set is the 44 prompts the TinyStories authors published for GPT-Eval
(packaged in ``service/data/evaluation_prompts.yaml``). Overlap is measured against each prompt:
the fraction of the prompt's word 10-grams that occur in the story. A story is contaminated when
that fraction reaches ``threshold`` for some prompt (default: ``DEFAULT_THRESHOLD``, see
docs/dedup.md for how it was chosen).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from service.dataset.minhash import normalize_text

DEFAULT_N = 10
# A story "contains" a prompt when at least a quarter of the prompt's 10-grams appear in it:
# one shared 10-gram is too weak (stock openings such as "once upon a time there was a little
# girl named lily" are 10 words), while a copied prompt of any length shares far more.
DEFAULT_THRESHOLD = 0.25
EVALUATION_SET = "evaluation_prompts.yaml"


class EvaluationSetError(ValueError):
    """An evaluation prompt file that cannot be read."""


def load_prompts(path: str | os.PathLike[str] | None = None) -> list[str]:
    """Evaluation prompts from YAML (a list of strings) or text (one per blank-line block)."""
    if path is None:
        text = resources.files("service.data").joinpath(EVALUATION_SET).read_text("utf-8")
        name = EVALUATION_SET
        suffix = ".yaml"
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EvaluationSetError(f"{p}: cannot read evaluation set: {exc}") from None
        name = str(p)
        suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml", ".json"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise EvaluationSetError(f"{name}: invalid YAML: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("prompts"), list):
            data = data["prompts"]
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise EvaluationSetError(f"{name}: expected a list of prompt strings")
        prompts = [x for x in data if x.strip()]
    else:
        prompts = [b.strip() for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    if not prompts:
        raise EvaluationSetError(f"{name}: no prompts")
    return prompts


def _ascii_table() -> bytes:
    # ASCII letters and digits lowercased, every other byte a space: for ASCII text this is
    # what normalize_text does (NFKC is the identity there, and \w is [A-Za-z0-9_]).
    return bytes(c if chr(c).isalnum() else 0x20 for c in bytes(range(128)).lower()) + bytes(128)


_ASCII_TABLE = _ascii_table()
_ASCII_APOSTROPHES = b"'`"  # normalize_text drops these before splitting on punctuation


def normalized_words(text: str) -> list[str]:
    """``normalize_text(text).split()``, with a single-pass fast path for ASCII text."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TABLE, _ASCII_APOSTROPHES).decode().split()
    return normalize_text(text).split()


def word_ngrams(text: str, n: int) -> list[str]:
    words = normalized_words(text)
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def _gram_tuples(words: list[str], n: int) -> set[tuple[str, ...]]:
    # n shifted views zipped together: every n-gram as a tuple, built and hashed in C
    return set(zip(*(words[k:] for k in range(n)), strict=False))


@dataclass(frozen=True)
class DecontamResult:
    contaminated: bool
    overlap: float  # best prompt: fraction of its n-grams found in the story
    prompt_index: int | None  # that prompt's index, None when nothing is shared


class Decontaminator:
    """Set-indexed n-gram lookup: one pass over the story, O(len(story)).

    N-grams are tuples of normalised words. A story position is only looked up when its
    (first word, n-th word) pair starts and ends some prompt n-gram, which skips most
    positions without building their n-gram.
    """

    def __init__(
        self,
        prompts: Sequence[str] | None = None,
        n: int = DEFAULT_N,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.prompts = list(prompts) if prompts is not None else load_prompts()
        self.n = n
        self.threshold = threshold
        self._index: dict[tuple[str, ...], list[int]] = {}
        self._sizes: list[int] = []
        self._short: list[tuple[int, str]] = []  # prompts with fewer than n words
        for i, prompt in enumerate(self.prompts):
            words = normalized_words(prompt)
            grams = _gram_tuples(words, n)
            self._sizes.append(len(grams))
            if not grams and words:
                self._short.append((i, f" {' '.join(words)} "))
            for g in grams:
                self._index.setdefault(g, []).append(i)
        self._ends = {(g[0], g[-1]) for g in self._index}

    def check(self, text: str, *, words: list[str] | None = None) -> DecontamResult:
        """Whether `text` overlaps an evaluation prompt beyond the threshold; `words`: its
        ``normalized_words`` when the caller has them."""
        if words is None:
            words = normalized_words(text)
        n, index, ends = self.n, self._index, self._ends
        shared = {
            g
            for i, pair in enumerate(zip(words, words[n - 1 :], strict=False))
            if pair in ends and (g := tuple(words[i : i + n])) in index
        }
        hits: dict[int, int] = {}  # prompt index -> distinct shared n-grams
        for g in shared:
            for i in index[g]:
                hits[i] = hits.get(i, 0) + 1
        best_i: int | None = None
        best = 0.0
        for i, found in hits.items():
            frac = found / self._sizes[i]
            if frac > best or (frac == best and best_i is not None and i < best_i):
                best, best_i = frac, i
        if self._short:
            padded = f" {' '.join(words)} "
            for i, needle in self._short:
                if needle in padded and 1.0 >= best:
                    best, best_i = 1.0, i
                    break
        return DecontamResult(best >= self.threshold and best_i is not None, best, best_i)

    def count(self, texts: Iterable[str]) -> int:
        return sum(1 for t in texts if self.check(t).contaminated)

    def params(self) -> dict[str, object]:
        return {"n": self.n, "threshold": self.threshold, "prompts": len(self.prompts)}
