"""What of a customer's message to search for.

An angry customer may write in capitals; the message is then searched in lower case.

Customers often say what they do *not* want before what they do: "I don't want to cancel, I
want to upgrade". Every word of the first clause matches the wrong entry, so a clause that
negates an intent ("don't want", "not trying to", "not asking about", a clause opening with
"not") is left out of the search when another clause remains. A negation that describes the
problem ("the video doesn't play") is kept: it is the question, and so is one that asks to
stop something ("I don't want the emails anymore").

`questions` finds the questions a message asks, so that two at once can be answered from two
entries (`decisions.Decisions._two_topics`).
"""

from __future__ import annotations

import itertools
import re

_INTENT_NEGATION = re.compile(
    r"^(?:not\b|no\b)"
    r"|\b(?:do|does|did)\s*(?:n[o']?t)\s+(?:want|need|mean|care)\b"
    r"|\b(?:don'?t|doesn'?t|didn'?t)\s+(?:want|need|mean|care)\b"
    r"|\b(?:i'?m|i am|am|we'?re|we are)\s+not\s+(?:trying|asking|looking|talking|interested)\b"
    r"|\bnot\s+(?:asking|trying|looking|talking)\b"
    r"|\b(?:rather than|instead of)\b",
    re.IGNORECASE,
)
# English function words (articles, pronouns, prepositions, conjunctions, auxiliaries, wh-words),
# light verbs ("get", "want") and politeness: a follow-up sharing only these with an entry
# shares no topic with it.
# scikit-learn's stop-word list would also drop "fire", "bill", "show", "call" and "system",
# which a customer's "fire stick?" or "bill?" is about.
FUNCTION_WORDS = frozenset(
    # A word list reads best as words; ruff's SIM905 would put one word a line.
    """a an the this that these those some any all each every no not nor only own same such
    i me my mine myself we us our ours you your yours he him his she her hers it its they them
    their theirs one what which who whom whose when where why how whether
    am is are was were be been being do does did doing done have has had having
    can could will would shall should may might must ought
    and or but so if then than because as while though although also too very just yet still
    of at by for with about into onto to from in on off out up down over under through
    between after before again there here please thanks thank hi hello ok okay yes
    get got want need know tell give let""".split()  # noqa: SIM905
)
# A negated clause that asks to stop something ("I don't want the emails anymore") is the
# request, unless what is no longer wanted is itself a stop: "I don't want to cancel anymore,
# I want to keep my plan" is a change of mind.
_STOPPING = re.compile(r"\b(?:any\s?more|any\s+longer|no\s+longer)\b", re.IGNORECASE)
_STOP_VERB = re.compile(
    r"\b(?:cancel|stop|end|quit|leave|close|delete|remove|unsubscribe|pause)\w*", re.IGNORECASE
)
# A dash between spaces, not the hyphen of "sign-in".
_CLAUSES = re.compile(r"[,;.!?]+\s*|\s+[-\u2013\u2014]+\s+|\s+but\s+", re.IGNORECASE)
# Customers often run "I don't want to X I just want to Y" together without a comma. After
# "if" or "when" the want is a condition of the clause, not a new one ("I don't want to lose
# my list when I want to cancel").
_SUBORDINATORS = ("if", "when", "because", "so", "that", "unless", "once", "before", "after", "as")
# What may stand between "I" and "want" in a request: "I just want to", "we really need to".
_REQUEST_ADVERB = r"(?:(?:just|only|simply|actually|really|also)\s+)?"
_WANT = re.compile(
    r"(?<=\w)"
    + "".join(rf"(?<!\b{word})" for word in _SUBORDINATORS)
    + rf"\s+(?=(?:i|we)\s+{_REQUEST_ADVERB}(?:want|need|would\s+like|wanna)\b)",
    re.IGNORECASE,
)
_WORDS = re.compile(r"\w+")
# A word of letters only; and a contraction ("what's", "won't"), a function word that split at
# the apostrophe would leave a content-looking half ("won" shares nothing with "who won?").
LETTERS = re.compile(r"[^\W\d_]+")
CONTRACTION = re.compile(r"\w+['\u2019]\w+")
# A message with at least this many letters, 70% of them capitals, is shouted, not an acronym.
SHOUTED_LETTERS = 8


# A request worded as a statement, which asks as a question does: "I need to", "we'd like to".
_REQUEST = (
    rf"(?:i|we)\s+{_REQUEST_ADVERB}(?:(?:want|need|would\s+like)\s+to|wanna)\b"
    r"|(?:i|we)['\u2019]d\s+like\s+to\b"
)
_TO_KNOW = re.compile(r"\s+(?:know|find\s+out|understand|ask|check)\b", re.IGNORECASE)
# What opens a question: a question word, an auxiliary before its subject ("can I", "does
# it"; not "can't log in" or "do not charge me", which are statements or orders), or a request
# for the answer to one ("just tell me how to cancel"); and the word that joins a second
# question to the first. Not "what a" or "what an", an exclamation ("what a week", "what a
# joke") unless a question mark says otherwise.
_OPENER = (
    r"(?:(?:how|what(?!\s+an?\b)|what's|when|where|why|which|who)\b"
    r"|(?:can|could|do|does|did|is|are|will|would|should|may|am)\s+"
    r"(?:i|you|we|they|it|he|she|there|my|your|our|the|this|that|these|those)\b"
    r"|(?:(?:just|please|so)\s+)?(?:tell|show)\s+me\s+(?:how|what|when|where|why|which|if|whether)\b"
    rf"|{_REQUEST}"
    r")"
)
# "and also" is one joiner; written without repetition, the lookaheads of _QUESTIONS stay
# linear in a message's length.
_JOINER = r"(?:and\s+(?:also\s+)?|also\s+|plus\s+)"
_QUESTION_START = re.compile(rf"(?:{_JOINER})?{_OPENER}", re.IGNORECASE)
_REQUEST_START = re.compile(rf"^\W*(?:{_JOINER})?(?:{_REQUEST})", re.IGNORECASE)
# Questions end at a question mark, a full stop or semicolon, or before a comma or "and" that
# opens the next one ("how do I cancel and will I get a refund?").
_QUESTIONS = re.compile(
    rf"(?<=\?)\s*|[.;!]+\s+|,\s*(?=(?:{_JOINER})?{_OPENER})|\s+(?={_JOINER}{_OPENER})",
    re.IGNORECASE,
)
# A question needs this many words to be searched alone.
QUESTION_WORDS = 3


def content_words(text: str) -> set[str]:
    """`text`'s lower-cased words of letters, besides contractions and FUNCTION_WORDS."""
    return set(LETTERS.findall(CONTRACTION.sub(" ", text.lower()))) - FUNCTION_WORDS


def is_request(part: str) -> bool:
    """Whether `part`, one of a message's questions (`questions`), is a request worded as a
    statement ("I need to change my card"), without a question mark, and not one to know
    something ("I need to know how to change my password", a question): after a question it
    may say why the customer asks rather than what ("How do I cancel? I want to switch to
    another service.")."""
    found = _REQUEST_START.match(part)
    if not found or part.rstrip().endswith("?"):
        return False
    return not _TO_KNOW.match(part, found.end())


def questions(message: str) -> list[str]:
    """The questions `message` asks, in order: its parts that end in "?" or open like a
    question, of QUESTION_WORDS words or more. A statement beside them ("I was charged twice.")
    is not one; a message of one question gives a list of one (or none, for a statement)."""
    found = []
    for part in _QUESTIONS.split(_spaced(message)):
        part = (part or "").strip()
        asks = part.endswith("?") or _QUESTION_START.match(part)
        if asks and len(_WORDS.findall(part)) >= QUESTION_WORDS:
            found.append(part)
    return found


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(message: str, min_words: int = QUESTION_WORDS) -> list[str]:
    """`message`'s sentences of `min_words` words or more, in order, each with its runs of
    whitespace as one space. A sentence ends at ".", "!" or "?" before whitespace, so an
    abbreviation ("e.g. the app") ends one too: harmless where each part is searched alone."""
    parts = (part.strip() for part in _SENTENCE_END.split(_spaced(message)))
    return [part for part in parts if part and len(_WORDS.findall(part)) >= min_words]


# What makes a short message lean on the one before: a pronoun standing for its topic ("when
# does it start?"), or an opening that continues it ("what about premium?", "and on my phone?").
# Not "also", which opens a question of its own ("also, can I change my password?").
_BACK_REFERENCE = re.compile(
    r"^\W*(?:and|what about|how about|same for)\b|\b(?:it|its|that|this|they|them)\b",
    re.IGNORECASE,
)


def refers_back(message: str) -> bool:
    """Whether `message` points to an earlier topic rather than naming its own (see
    `_BACK_REFERENCE`): "how long does it take?" yes, "can i watch on my ps5?" no."""
    return bool(_BACK_REFERENCE.search(message))


_JOINED_QUESTION = re.compile(rf"^\W*{_JOINER}(?={_OPENER})", re.IGNORECASE)


def without_joiner(question: str) -> str:
    """`question` without the word that joins it to the one before, when a question opens
    after it ("and how do I get a refund?" -> "how do I get a refund?"); a continuation such
    as "and the yearly one?" is left as it is."""
    return _JOINED_QUESTION.sub("", question, count=1)


def _spaced(message: str) -> str:
    """`message` with each run of whitespace as one space: the splitting patterns start at
    whitespace, and a long run would make them try every position in it."""
    return " ".join(message.split())


def clauses(message: str) -> list[str]:
    """`message`'s clauses, split at punctuation, a dash between spaces and "but", stripped,
    none empty."""
    return [c.strip() for c in _CLAUSES.split(_spaced(message)) if c and c.strip()]


def _asks_to_stop(clause: str) -> bool:
    """Whether a negated clause asks to stop something (see `_STOPPING`)."""
    return bool(_STOPPING.search(clause)) and not _STOP_VERB.search(clause)


def search_text(message: str) -> str:
    """`message` without the clauses that say what the customer does not want, when a clause
    that says what they do want remains; otherwise `message` unchanged. A message shouted in
    capitals is searched in lower case: the encoders read "CHARGED" as another word than
    "charged"."""
    letters = [char for char in message if char.isalpha()]
    if len(letters) >= SHOUTED_LETTERS and sum(c.isupper() for c in letters) >= 0.7 * len(letters):
        message = message.lower()
    parts = [part for clause in clauses(message) for part in _WANT.split(clause) if part]
    if len(parts) < 2:
        return message
    kept = [c for c in parts if not _INTENT_NEGATION.search(c) or _asks_to_stop(c)]
    if len(kept) == len(parts) or sum(len(_WORDS.findall(c)) for c in kept) < 2:
        return message
    return ", ".join(kept)


# A word of the company's name shorter than this is no name on its own (the "t" of "AT&T").
NAME_WORD_LETTERS = 3


def name_pattern(
    company: str, known_words: set[str], english: frozenset[str] = frozenset()
) -> re.Pattern[str] | None:
    """What of a message names the company (`company`, the business profile's name), for
    `without_name`, or None when nothing does:

    - the whole name in any letter case, its words run together or apart or joined by
      punctuation ("Lumen-Stream"), with symbols after it ("Disney+") and a possessive; a
      name of several words also as its first words while two of them are not function
      words ("Lumen Stream" of "Lumen Stream Inc.", not "The Daily" of "The Daily Ledger");
    - one word alone: a one-word name, or a longer name's first word that is not a function
      word ("my Lumen account" for "Lumen Stream"), when it is NAME_WORD_LETTERS letters or
      more. An English word (`english`, lower case) counts only when the KB's questions do
      not use it (`known_words`, lower case: a company called "Stream" whose KB asks "Can I
      stream in 4K?"), and only capitalised after another word: "my Three contract", never
      "charged three times" or a sentence's first word. A made-up word is the name even in
      the KB's own titles ("How do I cancel my Pagecast membership?" drew "Can I use
      Pagecast on my Echo?" to it).

    Never inside an address ("lumenstream.com", "help@lumenstream.example",
    "zapflix-tv.com", "example.com/zapflix", "#zapflix")."""
    words = _WORDS.findall(company.lower())
    forms = [
        _joined(words[:n])
        for n in range(len(words), 1, -1)
        if n == len(words) or sum(word not in FUNCTION_WORDS for word in words[:n]) >= 2
    ]
    alone = next((word for word in words if word not in FUNCTION_WORDS), None)
    if (
        alone
        and len(alone) >= NAME_WORD_LETTERS
        and alone.isalpha()
        and (alone not in known_words or alone not in english)
    ):
        if alone in english:
            cased = f"{re.escape(alone.capitalize())}|{re.escape(alone.upper())}"
            forms.append(rf"(?<=[\w,;:] )(?-i:{cased})")
        else:
            forms.append(re.escape(alone))
    if not forms:
        return None
    # Not inside an address: "lumenstream.com", "help@lumenstream.example", "zapflix-tv.com",
    # "example.com/zapflix/billing" and "#zapflix" stay whole. The space before the name goes
    # with it: "is it on Lumen?" reads "is it on?".
    return re.compile(
        rf" ?(?<![\w@./#-])(?:{'|'.join(forms)}){_NAME_SYMBOLS}(?:['\u2019]s)?"
        r"(?!\w|[.@/-]\w)",
        re.IGNORECASE,
    )


# Marks that may follow a name ("Disney+", "Brand®"); not "!" or ")", which end its sentence.
_NAME_SYMBOLS = "[+&*\u00ae\u2122]*"


def _joined(words: list[str]) -> str:
    """A pattern of `words` in order, run together, apart (spaces or tabs) or joined by one
    mark ("Lumen-Stream", "Lumen_Stream", "Lumen.Stream"), never across a sentence's end
    ("Thanks Lumen! Stream keeps buffering", "I love lumen. Stream quality is bad"); two
    words under NAME_WORD_LETTERS letters side by side only run together or joined by one
    mark ("AT&T", "ATT", not the "at t" of "at t-mobile"; "Zapflix TV" apart too)."""
    pattern = re.escape(words[0])
    for before, word in itertools.pairwise(words):
        short = max(len(before), len(word)) < NAME_WORD_LETTERS
        gap = r"[&\-.'\u2019]?" if short else r"(?:[ \t]+|[&\-_'\u2019/+]|\.(?!\s))?"
        pattern += gap + re.escape(word)
    return pattern


def without_name(message: str, pattern: re.Pattern[str] | None) -> str:
    """`message` without the company's name (`name_pattern`) and the space before it, or
    unchanged when it does not name the company or nothing else would remain. Every entry
    of the KB is about the company, so its name tells retrieval nothing, and the KB seldom
    writes it out (a `{{COMPANY_NAME}}` placeholder, or none): "I got a text saying my Lumen
    account is suspended" scored under the demo KB's gate with it and over without it."""
    if pattern is None:
        return message
    rest, named = pattern.subn("", message)
    rest = rest.strip()
    return rest if named and _WORDS.search(rest) else message
