"""Spelling correction toward the knowledge base's own words.

Customers misspell ("how do i cancle my subscripton"), and a misspelt word matches little: the
question may then score under the scope gate and be declined. A word is corrected only when
it is neither a word of the KB nor an English word (symspellpy's 82,765-word frequency list),
and then only to a KB word within one edit (two for words of 8 letters or more), found with
SymSpell's symmetric-delete lookup (Wolf Garbe, 2012; the `symspellpy` package). Edits count
an adjacent transposition as one ("cancle" -> "cancel"). Words of under 5 letters ("u",
"pls", and names such as "uber", which became "user"), and words with digits ("ps5"), are
left alone. Correct only a message in the KB's language: another language's words would be
"corrected" into the KB's ("Wie kann ich mein Abo kündigen?": "mein" -> "main");
`decisions.Decisions` checks the language first.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from importlib.resources import files

from symspellpy import SymSpell, Verbosity

_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")
# Where a sentence starts: a capital there is not a name's.
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)$")
_ENGLISH = "frequency_dictionary_en_82_765.txt"
MIN_LENGTH = 5
LONG_WORD = 8


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """The lower-case words of symspellpy's English frequency list."""
    text = files("symspellpy").joinpath(_ENGLISH).read_text(encoding="utf-8")
    return frozenset(line.split(" ", 1)[0] for line in text.splitlines() if line)


class Speller:
    """Corrects a message's misspelt words to the KB's words (see the module docstring).

    `texts` are the KB's questions, alternates and answers; a word's count among them breaks
    ties between corrections at the same distance.
    """

    def __init__(self, texts: Iterable[str]):
        counts = Counter(
            word.lower()
            for text in texts
            for word in _WORD.findall(text)
            if len(word) >= MIN_LENGTH - 1 and word.isalpha()
        )
        self._known = frozenset(counts)
        self._symspell = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
        for word, count in counts.items():
            self._symspell.create_dictionary_entry(word, count)

    def __setstate__(self, state: dict) -> None:
        # Loaded with a cached index: read the word list now, not at the first question.
        self.__dict__.update(state)
        english_words()

    def _known_word(self, word: str) -> bool:
        return word in self._known or word in english_words()

    def _correction(self, word: str) -> str | None:
        if len(word) < MIN_LENGTH or not word.isalpha() or self._known_word(word):
            return None
        distance = 2 if len(word) >= LONG_WORD else 1
        found = self._symspell.lookup(word, Verbosity.TOP, max_edit_distance=distance)
        return found[0].term if found else None

    def correct(self, message: str) -> str:
        """`message` with each misspelt word replaced by its KB word, in the word's case
        ("CANCLE" -> "CANCEL"): "how do i cancle my subscripton" -> "how do i cancel my
        subscription". A capitalised word inside a sentence is a name and stays ("my Gmail
        account" keeps "Gmail", which the word list lacks)."""

        def fixed(match: re.Match[str]) -> str:
            word = match.group()
            name = word[0].isupper() and not word.isupper()
            if name and not _SENTENCE_START.search(message[: match.start()]):
                return word
            fix = self._correction(word.lower())
            if fix is None:
                return word
            return (
                fix.upper()
                if word.isupper() and len(word) > 1
                else (fix.capitalize() if word[0].isupper() else fix)
            )

        return _WORD.sub(fixed, message)
