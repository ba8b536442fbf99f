"""What a vocabulary word is: letters of any script, parts joined by '-' or an apostrophe."""

from __future__ import annotations

import re
import unicodedata

# Inner hyphens or apostrophes join the parts of one word (ice-cream, x-ray, o'clock).
_PART_SEPARATORS = re.compile(r"[-']")


def normalize_word(word: str) -> str:
    """`word` stripped and in NFC, so "cafe\\u0301" and "café" are one word."""
    return unicodedata.normalize("NFC", word.strip())


def _continues_word(char: str) -> bool:
    """A letter or a combining mark, or a code point this Python's Unicode database does not
    assign yet (a newer Unicode's letter or mark: Python 3.11 reads Unicode 14)."""
    category = unicodedata.category(char)
    if category[0] in "LM":
        return True
    code = ord(char)
    noncharacter = 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE
    return category == "Cn" and not noncharacter


def word_problem(word: str) -> str | None:
    """Why `word` (normalised) is not a single word, or None when it is one.

    A word is letters of any script (a letter may carry combining marks, as Devanagari's
    vowel signs do), with an inner '-' or apostrophe between parts; no spaces, digits or
    other punctuation. Each part starts with a letter."""
    for part in _PART_SEPARATORS.split(word):
        if (
            not part
            or not unicodedata.category(part[0]).startswith("L")
            or not all(_continues_word(c) for c in part[1:])
        ):
            return f"{word!r} is not a single word (letters, '-' or ''' only)"
    return None
