"""Build vocab/data/words.tsv from the real TinyStories word list (run once, by hand).

    python -m vocab.build_words WORDS.txt CORPUS.txt [--out vocab/data/words.tsv]

WORDS.txt is the union of `instruction.words` over the real TinyStories_all_data shards (no
roles); CORPUS.txt is real TinyStories text. Roles come from the lemminflect lexicon (which
parts of speech a word can be), narrowed by how the word is used in the corpus (after "the",
after "to"/"will", after "very"/"was", inflected forms), then a small manual table.
Not imported by the package at run time.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from collections import Counter
from pathlib import Path

from vocab.vocabulary import format_words_tsv

_DETERMINERS = {
    "a", "an", "the", "his", "her", "my", "your", "their", "our", "its", "this", "that",
    "some", "every", "no", "each",
}  # fmt: skip
_VERB_CUES = {
    "to", "will", "can", "could", "would", "should", "must", "let's", "didn't", "don't",
    "doesn't", "can't", "won't", "did", "please", "not",
}  # fmt: skip
_ADJ_CUES = {
    "very", "so", "too", "is", "was", "are", "were", "be", "felt", "feel", "feels", "looked",
    "look", "looks", "seemed", "got", "get", "became", "more", "most", "really",
}  # fmt: skip

# Judgement calls the lexicon and a small corpus cannot make. None drops the word.
MANUAL: dict[str, tuple[str, ...] | None] = {
    # Entries that are not child words for a recipe: a boolean, weekdays, an abbreviation,
    # an adverb.
    "True": None,
    "TV": None,
    "Tuesday": None,
    "Wednesday": None,
    "Sunday": None,
    "yet": None,
    # Missing from the lexicon but plain child words.
    "cop": ("noun",),
    "igloo": ("noun",),
    "cocoa": ("noun",),
    "fridge": ("noun",),
    "sunglasses": ("noun",),
    "bookcase": ("noun",),
    "mole": ("noun",),
    "trunk": ("noun",),
    "lab": ("noun",),
    "ice-cream": ("noun",),
    "x-ray": ("noun",),
    "yummy": ("adjective",),
    # Usual child-story roles the small corpus misjudges.
    "dare": ("verb",),
    "home": ("noun",),
    "top": ("noun",),
    "salt": ("noun",),
    "cherry": ("noun",),
    "copper": ("noun",),
    "chocolate": ("noun",),
    "vegetable": ("noun",),
    "plastic": ("noun", "adjective"),
    "purple": ("adjective",),
    "orange": ("noun", "adjective"),
    "silver": ("noun", "adjective"),
    "underground": ("noun", "adjective"),
    "twin": ("noun",),
    "zigzag": ("noun",),
    "fat": ("adjective",),
    "wide": ("adjective",),
    "elderly": ("adjective",),
    # Plural-only nouns the lexicon reads as inflected forms.
    "blocks": ("noun",),
    "pants": ("noun",),
}

# After "the X", these show X is the head noun ("the rock." vs "the ancient tree").
_NOUN_FOLLOWERS = {
    ".", ",", "!", "?", "and", "was", "is", "in", "on", "with", "of", "to", "that", "for", "he",
    "she", "it", "they", "had", "were", "are", "at", "from", "but", "again", "too",
}  # fmt: skip
# A second role needs this many corpus uses and this share of the main role's uses.
_SECONDARY_MIN = 3
_SECONDARY_SHARE = 0.4
# Verb uses of a noun-and-verb word: inflected forms make verbs easy to see, so less is needed.
_VERB_MIN = 2
_VERB_SHARE = 0.25
# A noun-and-verb word used this often as a verb and (almost) never after "the" is a verb only.
_VERB_ONLY_MIN = 10
# Words the lexicon says can be adjectives and nouns, unseen in the corpus: the spelling decides.
_ADJ_SUFFIXES = (
    "y", "ful", "less", "ous", "ive", "al", "ent", "ant", "ic", "ble", "ish", "ern", "ly", "ed",
    "est", "ide",
)  # fmt: skip
_TOKEN_RE = re.compile(r"[a-z]+(?:['-][a-z]+)*|[.,!?]")

Trigrams = Counter[tuple[str, str, str]]


def _corpus_counts(text: str) -> tuple[Counter[str], Counter[tuple[str, str]], Trigrams]:
    tokens = _TOKEN_RE.findall(text.lower().replace("’", "'"))
    bigrams = Counter(itertools.pairwise(tokens))
    trigrams = Counter(zip(tokens, tokens[1:], tokens[2:], strict=False))
    return Counter(tokens), bigrams, trigrams


def _evidence(
    word: str, unigrams: Counter[str], bigrams: Counter[tuple[str, str]], trigrams: Trigrams
) -> dict[str, int]:
    from lemminflect import getAllInflections

    lower = word.lower()
    preceding: Counter[str] = Counter()
    for (prev, cur), n in bigrams.items():
        if cur == lower:
            preceding[prev] += n
    noun = sum(
        n
        for (det, cur, nxt), n in trigrams.items()
        if cur == lower and det in _DETERMINERS and nxt in _NOUN_FOLLOWERS
    )
    verb = sum(preceding[c] for c in _VERB_CUES)
    adj = sum(preceding[c] for c in _ADJ_CUES)
    # Past tense, participles and -ing forms only; "-s" forms are shared with noun plurals.
    forms = getAllInflections(lower, upos="VERB")
    verb_forms = {f for tag in ("VBD", "VBN", "VBG") for f in forms.get(tag, ()) if f != lower}
    verb += sum(unigrams[f] for f in verb_forms)
    return {"noun": noun, "verb": verb, "adjective": adj}


def assign_roles(
    word: str, unigrams: Counter[str], bigrams: Counter[tuple[str, str]], trigrams: Trigrams
) -> tuple[str, ...] | None:
    """Roles for one word, or None to drop it."""
    from lemminflect import getAllLemmas

    if word in MANUAL:
        return MANUAL[word]
    lemmas = getAllLemmas(word)
    upos_to_role = {"NOUN": "noun", "VERB": "verb", "ADJ": "adjective"}
    candidates = [
        upos_to_role[upos]
        for upos, forms in lemmas.items()
        if upos in upos_to_role and word in forms
    ]
    if not candidates:
        if "VERB" in lemmas and word.endswith(("ed", "en", "ing")):
            return ("adjective",)  # participles used as adjectives: scared, hidden, charming
        return None  # not an English word the lexicon knows: a typo
    evidence = _evidence(word, unigrams, bigrams, trigrams)
    if len(candidates) == 1:
        # The lexicon lacks some concrete nouns (log, pedal): the corpus can add the noun role.
        if candidates == ["verb"] and evidence["noun"] >= _SECONDARY_MIN:
            return ("noun", "verb")
        return (candidates[0],)
    scores = {role: evidence[role] for role in candidates}
    if "adjective" in candidates:
        best = max(scores.values())
        if best == 0:
            return ("adjective",) if word.endswith(_ADJ_SUFFIXES) else ("noun",)
        primary = max(("adjective", "noun", "verb"), key=lambda r: scores.get(r, -1))
        kept = {primary} | {
            r for r, n in scores.items() if n >= _SECONDARY_MIN and n >= _SECONDARY_SHARE * best
        }
        return tuple(r for r in ("noun", "verb", "adjective") if r in kept)
    # Noun and verb: most such child words are things first (the real recipes use 1,066 nouns
    # and 394 verbs); the verb role is added when the corpus uses the word as a verb enough.
    # Unseen in the corpus: nothing tells the roles apart, so both stay.
    verb, noun = scores["verb"], scores["noun"]
    if verb >= _VERB_ONLY_MIN and noun < max(1.0, 0.01 * verb):
        return ("verb",)  # plainly a verb in child stories: say, run, worry, play
    if verb + noun == 0 or (verb >= _VERB_MIN and verb >= _VERB_SHARE * noun):
        return ("noun", "verb")
    return ("noun",)


def build(words_path: Path, corpus_path: Path) -> list[tuple[str, tuple[str, ...]]]:
    words = [w.strip() for w in words_path.read_text(encoding="utf-8").splitlines() if w.strip()]
    unigrams, bigrams, trigrams = _corpus_counts(corpus_path.read_text(encoding="utf-8"))
    entries = []
    for word in sorted(set(words)):
        roles = assign_roles(word, unigrams, bigrams, trigrams)
        if roles:
            entries.append((word, roles))
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("words", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "words.tsv")
    args = parser.parse_args(argv)
    entries = build(args.words, args.corpus)
    header = (
        "# Child vocabulary: word<TAB>roles. Words from the union of instruction.words of the\n"
        "# real TinyStories_all_data shards data00-04; roles from vocab/build_words.py.\n"
    )
    args.out.write_text(header + format_words_tsv(entries), encoding="utf-8")
    sys.stderr.write(f"wrote {len(entries)} words to {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
