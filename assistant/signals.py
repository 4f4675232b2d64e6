"""What a message says about the conversation, whatever the knowledge base holds: that the
customer asks for a person, is frustrated with the answers, or writes in another language.

The person and frustration signals are a linear SVM over character n-grams (which work across
languages and survive typos), trained on `data/handoff-examples.txt` against the KB's own
questions, the off-topic background and the file's `none` examples (calm requests worded as
statements, which a KB of questions does not show), so a KB question is never mistaken for
either. Given
sentence embeddings, a second SVM over the n-grams and the embedding side by side also reads
frustration: an angry message often shares its meaning with the examples but not its letters
("ugh, forget it, this is going nowhere" beside "I'm getting nowhere with you").
Language identification is py3langid (Lui and Baldwin 2012, "langid.py: An Off-the-shelf
Language Identification Tool").
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from assistant.retrieval.encoders import EncoderError
from assistant.retrieval.query import clauses, sentences
from assistant.retrieval.spelling import english_words
from assistant.small_talk import small_talk_kind

if TYPE_CHECKING:
    from assistant.retrieval.encoders import Encoder

HUMAN = "human"
FRUSTRATION = "frustration"
_NONE = "none"
# Enough of the KB's questions to teach "this is an ordinary question"; more only costs time.
MAX_NEGATIVES = 3000
_WORDS = re.compile(r"[^\W\d_]+")
# The fewest words a clause of a longer message needs for its request for a person to count.
MIN_CLAUSE_WORDS = 3
# A clause alone must ask for a person this clearly (its SVM margin): a greeting to the team
# ("Hi support team", "Dear customer service") or a mention of staff ("I spoke with your
# support team") scored 0.0-0.4 against the demo KB and StackFAQ, requests ("can I talk to
# someone", "put me through to a manager") 0.56-0.98.
CLAUSE_MARGIN = 0.5
# The embedding's weight beside the n-grams (unit-length rows both) in the second frustration
# SVM. With WordLlama at 0.5, our 13 frustrated test messages were all handed off (11 by the
# n-grams alone); at 1.0 and 2.0 more ordinary questions of ours looked frustrated too.
DENSE_WEIGHT = 0.5
# A request for a person joined to a question by "and" ("my card was charged twice and I
# need a human to sort it out") is a clause of its own for that request.
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|no|never|without|nobody|nothing)\b|n['\u2019]t\b", re.IGNORECASE)
# The fewest words of a message whose emphasis makes it a complaint (`emphatic`): off-topic
# requests say "!" too ("i need to make a quick decision, so roll a dice!", 11 words). Of
# CLINC150's 1,578 off-topic questions declined on the demo KB none this long is emphatic, on
# StackFAQ's one ("someone is charging my card for playstations, and it's not me! ...").
COMPLAINT_WORDS = 12
# A word in capitals, not part of a longer token ("MS-DOS", "PS5"): shouted when English. Four
# letters or more: "ATM", "SIM", "LED" and "MAX" are English words too.
CAPITALS = re.compile(r"(?<![\w-])[A-Z]{4,}(?![\w-])")
# VADER's compound score (-1 to 1) from which a message in capitals is friendly, not a
# complaint: "LOVE the new season, quick question: who won the match last night?" 0.86. The
# complaints of our own set and the newcomers' score -0.78 to 0.30 ("...you took my money
# TWICE", 0.30, for its "loyal customer").
FRIENDLY = 0.5


def read_examples(path: Path) -> list[tuple[str, str]]:
    """`(label, message)` pairs from a `label<TAB>message` file; `#` lines are comments."""
    if not path.is_file():
        return []
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#") and "\t" in line:
            label, text = line.split("\t", 1)
            pairs.append((label.strip(), text.strip()))
    return pairs


class HandoffSignals:
    """Tells a request for a person (`human`) or `frustration` from any other message.

    `detect` returns one of those labels or None. A message needs a positive SVM margin for
    the label, so it must look more like the examples than like the KB's questions. With an
    `encoder`, a local one giving unit-length rows (rag.build_signals passes WordLlama's,
    whatever the retrieval encoder, so the signal is the same on every install), a message
    the n-grams find nothing in is frustrated when a second SVM, over the n-grams and the
    embedding, gives frustration a positive margin. An encoder that fails (EncoderError)
    leaves the n-grams alone.
    """

    def __init__(
        self,
        examples: Sequence[tuple[str, str]],
        questions: Sequence[str],
        background: Sequence[str],
        seed: int = 0,
        encoder: Encoder | None = None,
    ):
        self._model: LinearSVC | None = None
        self._dense_model: LinearSVC | None = None
        self._encoder = encoder
        if not examples:
            return
        rng = np.random.default_rng(seed)
        negatives = list(questions) + list(background)
        if len(negatives) > MAX_NEGATIVES:
            negatives = [negatives[i] for i in rng.choice(len(negatives), MAX_NEGATIVES, False)]
        texts = [text for _, text in examples] + negatives
        labels = [label for label, _ in examples] + [_NONE] * len(negatives)
        self._vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, lowercase=True
        )
        matrix = self._vectorizer.fit_transform(texts)
        # Balanced: a few dozen examples against thousands of questions.
        self._model = LinearSVC(C=1.0, class_weight="balanced").fit(matrix, labels)
        self._classes = list(self._model.classes_)
        if encoder is not None and FRUSTRATION in self._classes:
            try:
                beside = self._with_embeddings(matrix, texts)
            except EncoderError:
                return
            self._dense_model = LinearSVC(C=1.0, class_weight="balanced").fit(beside, labels)

    def _with_embeddings(
        self, matrix: sparse.csr_matrix, texts: Sequence[str]
    ) -> sparse.csr_matrix:
        """The n-gram rows of `texts` with their DENSE_WEIGHT-scaled embeddings beside them.
        Raises EncoderError when the encoder fails."""
        assert self._encoder is not None
        dense = DENSE_WEIGHT * self._encoder.embed(list(texts))
        return sparse.hstack([matrix, sparse.csr_matrix(dense)], format="csr")

    def detect(self, message: str) -> str | None:
        """`human`, `frustration`, or None. A request for a person in one clause of a longer
        message counts ("my card was charged twice, can I talk to someone"): the rest of the
        message would otherwise outweigh it. Frustration is read from the whole message only,
        since an angry clause beside a real question ("This is ridiculous. I was charged
        twice") is a question to answer; with an encoder, by the embedding SVM too."""
        if self._model is None:
            return None
        # A negated clause is not split: its "and" is inside what the customer does not want
        # ("I don't want to wait on hold and talk to an agent").
        every = [
            part
            for clause in clauses(message)
            for part in ([clause] if _NEGATION.search(clause) else _AND.split(clause))
        ]
        # A clause of a word or two ("please", "thanks") says too little to be read alone, and
        # a negated one ("I don't want to talk to a person, just tell me how to cancel") says
        # what the customer does not want.
        parts = [
            c for c in every if len(c.split()) >= MIN_CLAUSE_WORDS and not _NEGATION.search(c)
        ] if len(every) > 1 else []  # fmt: skip
        # Nearly every KB question ends in "?" and few examples do, so the mark alone could
        # outweigh a request for a person ("how do I reach a real person?" was declined, the
        # same words without it handed off): the message without it is read for that too.
        unmarked = message.rstrip("?？ ")
        texts = [message, unmarked, *parts]
        matrix = self._vectorizer.transform(texts)
        margins = self._model.decision_function(matrix)
        whole = self._label(margins[0])
        human = self._classes.index(HUMAN) if HUMAN in self._classes else None
        asks = human is not None and any(row[human] > CLAUSE_MARGIN for row in margins[2:])
        # A clear request for a person says what to do, where frustration beside it only says
        # why ("I've asked three times, put me through to a manager").
        if whole == HUMAN or (whole == FRUSTRATION and asks):
            return HUMAN
        if whole is not None:
            return whole
        if self._label(margins[1]) == HUMAN or asks:
            return HUMAN
        return FRUSTRATION if self._frustrated(matrix[:1], message) else None

    def _frustrated(self, row: sparse.csr_matrix, message: str) -> bool:
        """Whether the embedding SVM gives `message` (its n-gram `row`) a positive frustration
        margin; False without one, or when the encoder fails."""
        if self._dense_model is None:
            return False
        try:
            beside = self._with_embeddings(row, [message])
        except EncoderError:
            return False
        margins = self._dense_model.decision_function(beside)[0]
        return bool(margins[self._classes.index(FRUSTRATION)] > 0)

    def _label(self, margins: np.ndarray) -> str | None:
        best = int(np.argmax(margins))
        label = self._classes[best]
        return str(label) if label != _NONE and margins[best] > 0 else None


def emphatic(message: str, acronyms: frozenset[str] = frozenset()) -> bool:
    """Whether `message` is a complaint said with emphasis: COMPLAINT_WORDS runs of letters or
    more ("it's" is two, "PS5" one), with an English word of four letters or more in capitals
    ("you took my money TWICE"; not one of `acronyms`, names the KB writes in capitals, nor
    "HBO") in a message that is not friendly (VADER's compound under FRIENDLY: not "LOVE the
    new season, quick question, ..."), or an exclamation mark outside small talk ("Fix it!",
    not "Hi there!") in a message that is not positive at all (compound 0 or under).
    Capitals and exclamation marks are VADER's emphasis cues (Hutto and Gilbert 2014, "VADER:
    A Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text"); its score
    alone cannot tell a complaint from a question, as it rates one by its words ("...you took
    my money TWICE" 0.30, a calm question 0.0), so it only keeps a friendly message out."""
    if len(_WORDS.findall(message)) < COMPLAINT_WORDS:
        return False
    shouted = any(
        word.lower() in english_words() and word not in acronyms
        for word in CAPITALS.findall(message)
    )
    exclaimed = any("!" in part and small_talk_kind(part) is None for part in sentences(message, 1))
    if not (shouted or exclaimed):
        return False
    compound = _sentiment().polarity_scores(message)["compound"]
    # "!" marks any feeling ("Tell me a joke please! ...", 0.36): a complaint's is not glad.
    return compound < FRIENDLY if shouted else compound <= 0


@functools.cache
def _sentiment():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vocabulary(texts: Sequence[str]) -> set[str]:
    """The lower-cased words of `texts`: what `foreign_language` counts as the KB's own."""
    return {w.lower() for text in texts for w in _WORDS.findall(text)}


def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    return name.split(" ")[0] if name else ""


# A message is classified twice on its way (`foreign_language`, then the speller's guard in
# decisions.Decisions): the second time is a lookup.
@functools.lru_cache(maxsize=256)
def language_of(text: str) -> tuple[str, float]:
    """`(ISO 639-1 code, probability)` of the text's language, by py3langid."""
    code, probability = _identifier().classify(text)
    return str(code), float(probability)


# Widely spoken languages: choosing among these rather than all 97 of the model's makes its
# probabilities for short messages usable ("¿Tienen prueba gratuita?": Spanish at 0.28 among
# all, 0.66 among these).
LANGUAGES = [
    *("ar", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he", "hi", "hu", "id"),
    *("it", "ja", "ko", "nl", "no", "pl", "pt", "ro", "ru", "sv", "th", "tr", "uk", "vi", "zh"),
]


@functools.cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(LANGUAGES)
    return identifier


def foreign_language(
    text: str, kb_language: str, known_words: set[str], min_probability: float = 0.5
) -> str | None:
    """The message's language when it is clearly not the KB's, else None.

    Short and misspelt messages fool any identifier ("pw reset" is not Estonian), so a message
    more than half of whose words are words of the KB counts as the KB's language; so does one
    of fewer than three words in the KB's script. A message in another script is foreign
    whatever its length. A message the identifier leans to another language for, but under
    `min_probability`, is that language when its words besides the KB's, three or more, are
    it at `min_probability`.
    """
    words = [w.lower() for w in _WORDS.findall(text)]
    if not words:
        return None
    letters = [c for c in text if c.isalpha()]
    latin = sum(_script(c) == "LATIN" for c in letters) / max(len(letters), 1)
    if latin < 0.5:
        code, _ = language_of(text)
        return code if code != kb_language else None
    if sum(w in known_words for w in words) / len(words) > 0.5 or len(words) < 3:
        return None
    code, probability = language_of(text)
    if code == kb_language:
        return None
    if probability < min_probability:
        # The KB's own words are often borrowed ("kann ich comics offline lesen?": German at
        # 0.44, "kann ich lesen" at 0.89): the rest must then say the same language, surely.
        rest = [w for w in words if w not in known_words]
        if len(rest) < 3:
            return None
        rest_code, rest_probability = language_of(" ".join(rest))
        if rest_code != code or rest_probability < min_probability:
            return None
    return code
