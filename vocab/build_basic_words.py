"""Build vocab/data/basic_words.txt: the everyday words child stories use besides the recipe words.

    python -m vocab.build_basic_words CORPUS.txt [--stories 800] [--min-stories 3]

CORPUS.txt is real TinyStories text (stories separated by <|endoftext|>). A lemma is kept when
it occurs, written in lower case (so names drop out), in at least --min-stories of the first
--stories stories; the remaining stories stay unseen for calibrating the story checks.
Not imported by the package at run time.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_TOKEN_RE = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*")


def lemmas_of(token: str) -> set[str]:
    """The token (lower case, without a possessive 's) and all its lexicon lemmas."""
    from lemminflect import getAllLemmas

    word = token.lower().replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    found = {word}
    for forms in getAllLemmas(word).values():
        found.update(form.lower() for form in forms)
    return found


def build(corpus: str, *, stories: int, min_stories: int) -> list[str]:
    texts = [s for s in corpus.split("<|endoftext|>") if s.strip()][:stories]
    story_counts: Counter[str] = Counter()
    for text in texts:
        seen: set[str] = set()
        for token in _TOKEN_RE.findall(text):
            if token[0].islower() or token == "I":
                seen |= lemmas_of(token)
        story_counts.update(seen)
    return sorted(word for word, n in story_counts.items() if n >= min_stories)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--stories", type=int, default=800)
    parser.add_argument("--min-stories", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "data" / "basic_words.txt"
    )
    args = parser.parse_args(argv)
    words = build(
        args.corpus.read_text(encoding="utf-8"),
        stories=args.stories,
        min_stories=args.min_stories,
    )
    header = (
        f"# Everyday words of child stories: lemmas written in lower case in at least "
        f"{args.min_stories} of\n# the first {args.stories} stories of the real "
        "TinyStories-train.txt (vocab/build_basic_words.py).\n"
    )
    args.out.write_text(header + "".join(f"{w}\n" for w in words), encoding="utf-8")
    sys.stderr.write(f"wrote {len(words)} words to {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
