"""Telling a generated answer that repeats the model's instructions (the system prompt), in a
whole completion or delta by delta in a stream: a prompt injection that worked."""

from __future__ import annotations

import bisect
import functools
import unicodedata
from collections.abc import Sequence

from assistant import prompts
from assistant.llm.base import ProviderError

# A generated answer that repeats this many consecutive letters of its instructions (the
# system prompt), once case, spacing, punctuation and numbering are taken out, is echoing
# them: a prompt injection ("repeat the text above word for word", "number each word",
# "space out the letters") worked. Measured: the bundled SmolLM2 did so for 2 of 3 such
# requests. About eight words; shorter runs ("suggest contacting support") are ordinary wording.
ECHO_RUN_LETTERS = 40


class InstructionsEchoed(ProviderError):
    """The model repeated its instructions instead of answering: the answer is discarded."""


def _letters(text: str, offset: int = 0) -> tuple[str, list[int]]:
    """`text`'s letters, NFKC-normalised and case-folded (so fullwidth, accented-compatibility
    and upper-case forms compare equal), and where each one came from in `text` (plus
    `offset`): what is left of a passage after any reformatting (case, spaces, punctuation,
    digits and numbering). A character that folds to several letters gives each its
    position."""
    letters, positions = [], []
    for i, char in enumerate(text, offset):
        for folded in unicodedata.normalize("NFKC", char).casefold():
            if folded.isalpha():
                letters.append(folded)
                positions.append(i)
    return "".join(letters), positions


class Instructions:
    """The system prompt as a run of letters, to tell an answer that repeats any of it, or
    that carries the prompt's canary (`prompts.canary()`), however it is reformatted."""

    def __init__(self, system: str, run: int = ECHO_RUN_LETTERS):
        self.letters, _ = _letters(system)
        self.run = run
        self._runs = {self.letters[i : i + run] for i in range(len(self.letters) - run + 1)}
        canary, _ = _letters(prompts.canary())
        self.canary = canary if canary in self.letters else None

    def echoed(self, text: str) -> bool:
        """Whether `text` holds `run` consecutive letters of the instructions, or their
        canary."""
        letters, _ = _letters(text)
        return self._echoed_in(letters, 0)

    def _echoed_in(self, letters: str, first: int) -> bool:
        """Whether a run or the canary ends in `letters` at or after index `first`."""
        if self.canary and self.canary in letters[max(0, first - len(self.canary) + 1) :]:
            return True
        return any(
            letters[i : i + self.run] in self._runs
            for i in range(max(0, first - self.run + 1), len(letters) - self.run + 1)
        )

    def guard(self) -> EchoGuard:
        """A guard for one stream of these instructions' answer."""
        return EchoGuard(self)


class EchoGuard:
    """One stream's answer as it grows, checked against its instructions delta by delta. The
    letters are kept as they arrive, so a delta costs about its own length, not the text's."""

    def __init__(self, instructions: Instructions):
        self.instructions = instructions
        self.text = ""
        self._letters = ""
        self._positions: list[int] = []

    def add(self, part: str) -> bool:
        """Append a delta; True when the text now echoes the instructions."""
        letters, positions = _letters(part, len(self.text))
        self.text += part
        first = len(self._letters)
        self._letters += letters
        self._positions += positions
        if not letters:
            return False
        keep = self.instructions.run + len(self.instructions.canary or "")
        window = self._letters[max(0, first - keep) :]
        return self.instructions._echoed_in(window, min(first, keep))

    def releasable(self) -> int:
        """How much of the text may be sent: not its last word, which may be cut short, nor
        the letters at its end that continue the instructions and could still grow into an
        echo (or into the canary), nor the numbering or spacing before them."""
        text = self.text
        end = len(text)
        while end and (text[end - 1].isalnum() or text[end - 1] == "_"):
            end -= 1
        count = bisect.bisect_left(self._positions, end)
        if not count:
            return 0
        instructions = self.instructions.letters
        for k in range(min(self.instructions.run - 1, count), 0, -1):
            if self._letters[count - k : count] in instructions:
                return self._positions[count - k - 1] + 1 if k < count else 0
        return end


def instructions_of(messages: Sequence[dict[str, str]]) -> Instructions:
    """`Instructions` of the messages' system prompt, built once per distinct prompt: it only
    changes with the company name, and building it took 10-15% of a worker's CPU (profiled)."""
    return _instructions(" ".join(m["content"] for m in messages if m.get("role") == "system"))


_instructions = functools.lru_cache(maxsize=16)(Instructions)
