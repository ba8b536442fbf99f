"""Do models copy? Rouge-2 precision vs the true continuation and the closest training story."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def bigrams(text: str) -> Counter:
    w = words(text)
    return Counter(pairwise(w))


def rouge2_precision(candidate: str | Counter, reference: str | Counter) -> float | None:
    """Share of the candidate's bigrams (clipped counts) that also occur in the reference."""
    cand = candidate if isinstance(candidate, Counter) else bigrams(candidate)
    ref = reference if isinstance(reference, Counter) else bigrams(reference)
    total = sum(cand.values())
    if not total:
        return None
    return sum(min(n, ref[g]) for g, n in cand.items()) / total


class BigramIndex:
    """Inverted index bigram -> training story ids; finds the closest story without a scan."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        postings: dict[tuple[str, str], list[int]] = {}
        for doc, text in enumerate(self.texts):
            for g in bigrams(text):
                postings.setdefault(g, []).append(doc)
        self._postings = {g: np.asarray(ids, dtype=np.int32) for g, ids in postings.items()}

    def __len__(self) -> int:
        return len(self.texts)

    def closest(self, candidate: str, *, shortlist: int = 20) -> tuple[int | None, float | None]:
        """(story id, Rouge-2 precision) of the training story sharing most candidate bigrams."""
        cand = bigrams(candidate)
        hits = [self._postings[g] for g in cand if g in self._postings]
        if not cand:
            return None, None
        if not hits:
            return None, 0.0
        counts = np.bincount(np.concatenate(hits), minlength=len(self.texts))
        # Distinct shared bigrams bound the clipped overlap closely; rescore a shortlist exactly.
        top = np.argsort(-counts, kind="stable")[:shortlist]
        best_id, best = None, -1.0
        for doc in top:
            if counts[doc] == 0:
                break
            score = rouge2_precision(cand, self.texts[int(doc)]) or 0.0
            if score > best:
                best_id, best = int(doc), score
        return best_id, max(best, 0.0)


def split_story(story: str, fraction: float = 0.4) -> tuple[str, str]:
    """Cut a held-out story after ~fraction of its words (on a word boundary)."""
    parts = story.split(" ")
    cut = max(1, int(len(parts) * fraction))
    return " ".join(parts[:cut]), " " + " ".join(parts[cut:])


def histogram_png(values: dict[str, list[float]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 21)
    for label, vals in values.items():
        ax.hist(vals, bins=bins, alpha=0.6, label=label)
    ax.set_xlabel("Rouge-2 precision")
    ax.set_ylabel("completions")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
