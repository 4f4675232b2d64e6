"""The Retriever: ranks a knowledge base for a question and says whether it is in scope.

Two ways to rank, chosen per KB when the index is built:

- **Hybrid** (any KB): dense sentence embeddings of each entry's question and answer, fused
  by a weighted sum with character n-gram TF-IDF of its question and minsearch's word TF-IDF.
  The weights were chosen on StackFAQ's dev half (`assistant eval retrieval`, README). An
  entry with alternate questions scores as its best phrasing.
- **Intent model** (a KB with intent labels and enough phrasings per intent, like Bitext): a
  linear SVM over character n-grams picks the intent, minsearch ranks inside it.

The scope gate is calibrated from the KB alone: generic off-topic background text is scored
against the KB, and a question must score above what nearly all of that text reaches.
Returns ranked hits, the top intent (or entry id), a confidence in [0, 1] and the scope.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import minsearch
import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from assistant.knowledge import Document
from assistant.retrieval.encoders import (
    EmbeddingCache,
    Encoder,
    EncoderError,
    wordllama_encoder,
)
from assistant.retrieval.query import CONTRACTION, FUNCTION_WORDS, LETTERS, search_text
from assistant.retrieval.spelling import Speller

log = logging.getLogger(__name__)

TEXT_FIELDS = ("question", "intent_text", "response")
OUT_OF_DOMAIN = "__out_of_domain__"
# Halfway between the two medians, for an encoder that has measured no position of its own.
DEFAULT_SCOPE_POSITION = 0.5
# Alternate questions enough for their median to calibrate the hybrid gate.
MIN_HELD_OUT = 10


@dataclass(frozen=True)
class RetrievalSettings:
    """Knobs chosen by measurement (`assistant eval tune` rewrites the file that holds them)."""

    # Customers' questions look like the KB's questions far more than like its answers.
    boosts: Mapping[str, float] = field(
        default_factory=lambda: {"question": 3.0, "intent_text": 1.5, "response": 0.5}
    )
    use_intent_model: bool = True
    # Hits also show the best entry of the runner-up intents: recall when the model is unsure.
    alternates: int = 2
    # Scale of the intent model's margins before the softmax that gives the confidence.
    temperature: float = 4.0
    # Past a few hundred phrasings per intent accuracy is flat and training time is not.
    max_train_per_intent: int = 200
    svm_c: float = 2.0
    # Scale of each phrasing's static embedding beside its character n-grams (both unit
    # length) in the intent model's features; 0 reads the n-grams alone. Used when the index
    # has an encoder (EMBEDDING_PROVIDER is not `none`).
    intent_dense_weight: float = 1.0
    # The scope score adds this much of that similarity.
    similarity_weight: float = 1.0
    # Share of unseen real questions the out-of-scope gate must let through; the threshold is
    # calibrated on held-out KB questions at index time, so it adapts to each KB.
    scope_keep: float = 0.99
    # Taken off the calibrated threshold: the far tail of a few hundred scores is noise. With
    # the phrasings' embeddings in the intent model its held-out phrasings score higher, and
    # 0.3 declined more off-topic questions than before and more of our own wording; at 0.4
    # CLINC150 is declined as before (0.987 and 0.978 on two Bitext splits, against 0.981 and
    # 0.980) and more of our own questions get through (README, "Retrieval and decisions").
    scope_margin: float = 0.4
    # A KB with few phrasings per intent calibrates too low (its half-model is weak): floor.
    scope_floor: float = -0.5
    # A fixed threshold instead of the calibrated one.
    scope_threshold: float | None = None
    # Below this confidence an in-scope answer is handed to a person instead of guessed.
    handoff_threshold: float = 0.25
    # The intent model is used when the KB's intents have at least this many phrasings each
    # (median); one entry per topic, as in a team's FAQ, is ranked by the hybrid score.
    min_phrasings: int = 4
    # Hybrid score weights: answer similarity relative to the question's, character n-gram
    # similarity and minsearch's word TF-IDF similarity relative to the dense one.
    answer_weight: float = 0.2
    char_weight: float = 0.3
    word_weight: float = 0.1
    # Where the hybrid gate sits between the off-topic background's median best score (0)
    # and the median score of a KB entry's title against the *other* entries (1): how close
    # the KB's own topics are to each other. Chosen on StackFAQ and the demo FAQ, with both
    # local encoders (README, "Scope"). None: the encoder's own (`Encoder.scope_position`),
    # else 0.5.
    scope_position: float | None = None
    # Entries whose titles are scored against the rest of the KB for that median.
    scope_sample: int = 300
    # The gate never sits below this quantile of the background's scores: a small KB of
    # unrelated topics has a low inter-topic median (a 10-entry gym FAQ let 60% through).
    scope_floor_quantile: float = 0.75
    # With an intent model, a question its gate declines is let through when the hybrid
    # score clears this (stricter) quantile: everyday wording the KB's phrasings lack.
    rescue_declined: float = 0.995
    # Scale of hybrid scores before the softmax that gives an unlabelled KB's confidence.
    hybrid_temperature: float = 20.0
    # False: plain minsearch (the original project's ranking), the `--lexical` baseline.
    hybrid: bool = True

    @classmethod
    def load(cls, path: Path | None) -> RetrievalSettings:
        if path is None or not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown retrieval settings {sorted(unknown)}")
        return cls(**data)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Hit:
    document: Document
    score: float


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    intent: str | None
    category: str | None
    confidence: float
    in_scope: bool
    scope_score: float


@dataclass(frozen=True)
class IntentPrediction:
    ranked: list[str]
    confidence: float
    scope_score: float


class QueryVectorizer:
    """A fitted TfidfVectorizer's transform of one query, with the same arithmetic in the same
    order, so the vector is bit-identical. sklearn's own transform validates its input and
    assembles and re-checks sparse matrices on every call: about ten times the cost of the
    analysis itself, three times per search (measured: 0.4-1.0 ms per call on a 25,000-document
    KB, against 0.01-0.06 ms for the analyzer)."""

    def __init__(self, vectorizer: TfidfVectorizer):
        if vectorizer.binary or vectorizer.norm != "l2":
            raise ValueError("QueryVectorizer reproduces non-binary, l2-normalised TF-IDF only")
        self._analyze = vectorizer.build_analyzer()
        self._vocabulary = vectorizer.vocabulary_
        self._idf = vectorizer.idf_ if vectorizer.use_idf else None
        self._sublinear = vectorizer.sublinear_tf
        self._dtype = vectorizer.dtype
        self.size = len(self._vocabulary)

    def weights(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices, ascending, and their TF-IDF weights."""
        known = [c for c in map(self._vocabulary.get, self._analyze(query)) if c is not None]
        columns, counts = np.unique(np.array(known, dtype=np.int32), return_counts=True)
        values = counts.astype(self._dtype)
        if self._sublinear:
            np.log(values, out=values)
            values += 1.0
        if self._idf is not None:
            values *= self._idf[columns]
        # As sklearn's l2 normalisation: squares summed one after another in double precision.
        norm = np.cumsum(values * values, dtype=np.float64)[-1] if len(values) else 0.0
        if norm:
            values = (values.astype(np.float64) / np.sqrt(norm)).astype(self._dtype)
        return columns, values

    def dense(self, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
        vector = np.zeros(self.size, dtype=self._dtype)
        vector[columns] = values
        return vector


class IntentModel:
    """Character n-grams, across word boundaries, survive typos and run-together words
    ("cancle my subscripton", "wanna talk to human"); a linear SVM over them separates the
    KB's intents and, when given background text, an out-of-domain class.

    With `known_dense` and `background_dense` (unit vectors from `wordllama_encoder`, a row
    per phrasing), the SVM also reads each text's static embedding, scaled by
    `settings.intent_dense_weight`: words the KB's phrasings never use but mean the same
    ("my card was charged twice" for a payment issue). On our own customer-worded questions
    against the Bitext KB the right intent came first for 0.56 of them instead of 0.43, with
    the Bitext splits' held-out phrasings as before (README, "Retrieval and decisions")."""

    def __init__(
        self,
        vectorizer: TfidfVectorizer,
        known: sparse.csr_matrix,
        labels: Sequence[str],
        background: sparse.csr_matrix,
        settings: RetrievalSettings,
        known_dense: np.ndarray | None = None,
        background_dense: np.ndarray | None = None,
    ):
        self.settings = settings
        self._vectorizer = QueryVectorizer(vectorizer)
        self._dense = known_dense is not None and background_dense is not None
        features = sparse.vstack([known, background]).tocsr()
        if known_dense is not None and background_dense is not None:
            dense = settings.intent_dense_weight * np.vstack([known_dense, background_dense])
            features = sparse.hstack([features, sparse.csr_matrix(dense)], format="csr")
        svm = LinearSVC(C=settings.svm_c)
        svm.fit(features, [*labels, *[OUT_OF_DOMAIN] * background.shape[0]])
        classes = [str(c) for c in svm.classes_]
        # Kept as plain arrays: a query's margins are its few hundred rows of the weights,
        # without sklearn's per-call input validation, which costs more than the product.
        coef = np.atleast_2d(svm.coef_)
        intercept = np.atleast_1d(svm.intercept_)
        if len(classes) == 2:
            coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
        weights = np.ascontiguousarray(coef.T, dtype=np.float32)
        self._coef = weights[: known.shape[1]]
        self._dense_coef = weights[known.shape[1] :] * np.float32(settings.intent_dense_weight)
        self._intercept = intercept.astype(np.float32)
        self._inside = np.array([i for i, c in enumerate(classes) if c != OUT_OF_DOMAIN])
        self._outside = classes.index(OUT_OF_DOMAIN) if OUT_OF_DOMAIN in classes else None
        self.classes = [classes[i] for i in self._inside]
        label_array = np.array(labels)
        # Each class's phrasings, a row each: against a dense query vector the nearest is one
        # sparse matrix-vector product (sparse-sparse products cost several times more).
        self._examples = [known[label_array == c].tocsr() for c in self.classes]

    def _prediction(self, all_margins: np.ndarray, query: np.ndarray) -> IntentPrediction:
        """One query's prediction from its margins over every class and its dense vector."""
        margins = all_margins[self._inside]
        order = np.argsort(-margins)
        best = order[0]
        weights = np.exp((margins - margins[best]) * self.settings.temperature)
        outside = all_margins[self._outside] if self._outside is not None else 0.0
        nearest = (self._examples[best] @ query).max()
        return IntentPrediction(
            ranked=[self.classes[i] for i in order],
            confidence=float(weights.max() / weights.sum()),
            scope_score=float(margins[best] - outside)
            + self.settings.similarity_weight * float(nearest),
        )

    def _embedded(self, texts: Sequence[str]) -> np.ndarray | None:
        """The texts' static embeddings, shape (len(texts), dim), when the model reads them
        and WordLlama loads; else None (the character n-grams alone then decide)."""
        encoder = wordllama_encoder() if self._dense else None
        return encoder.embed(texts) if encoder is not None else None

    def predict(self, query: str) -> IntentPrediction:
        """The intents ranked for `query`, its confidence in [0, 1] and its scope score."""
        columns, values = self._vectorizer.weights(query)
        margins = values @ self._coef[columns] + self._intercept
        dense = self._embedded([query])
        if dense is not None:
            margins += dense[0] @ self._dense_coef
        return self._prediction(margins, self._vectorizer.dense(columns, values))

    def scope_scores(
        self, vectors: sparse.csr_matrix, dense: np.ndarray | None = None
    ) -> list[float]:
        """Scope scores of texts given as character TF-IDF rows and, for a model that reads
        them, their embeddings (one row per text)."""
        all_margins = np.asarray(vectors @ self._coef) + self._intercept
        if self._dense and dense is not None:
            all_margins += dense @ self._dense_coef
        return [
            self._prediction(all_margins[row], vectors[row].toarray().ravel()).scope_score
            for row in range(vectors.shape[0])
        ]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` highest `scores`, best first, ties in index order: what a stable
    argsort of the negated scores starts with, without sorting every score (on 25,000
    entries a full sort cost 2.1 ms of a query, the selection 0.25 ms). NaN ranks last."""
    if np.isnan(scores).any():
        scores = np.nan_to_num(scores, nan=-np.inf)
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    if k <= 0:
        return np.array([], dtype=np.intp)
    # A lexical ranking scores most entries 0, and numpy's partition slows on runs of equal
    # values (2.7 ms on 25,000 entries, against 0.25 ms): only scores above the lowest go in.
    lowest = scores.min()
    pool = np.flatnonzero(scores > lowest)
    if len(pool) < k:
        candidates = np.concatenate([pool, np.flatnonzero(scores == lowest)[: k - len(pool)]])
    else:
        pooled = scores[pool]
        kth = np.partition(pooled, len(pool) - k)[len(pool) - k]
        # Of the scores tied with the k-th, the first in index order make up the k.
        above = pool[pooled > kth]
        candidates = np.concatenate([above, pool[pooled == kth][: k - len(above)]])
    return candidates[np.lexsort((candidates, -scores[candidates]))]


def _training_sample(
    rows: Mapping[str, np.ndarray], cap: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    return {
        intent: ids if len(ids) <= cap else rng.choice(ids, cap, replace=False)
        for intent, ids in rows.items()
    }


class Retriever:
    """Ranks the KB for a query. No category filter: the intent model narrows the search, and
    its runner-up intents stay in the hits, so one wrong guess never hides the answer.

    `encoder` gives the dense ranking (None: lexical only); `embeddings` caches its vectors.
    Raises nothing for an empty KB: every search then finds nothing, out of scope.
    """

    def __init__(
        self,
        documents: Sequence[Document],
        settings: RetrievalSettings | None = None,
        background: Sequence[str] = (),
        encoder: Encoder | None = None,
        embeddings: EmbeddingCache | None = None,
    ):
        self.documents = list(documents)
        self.settings = settings or RetrievalSettings()
        self.encoder = encoder
        self._index = minsearch.Index(
            text_fields=list(TEXT_FIELDS), keyword_fields=["intent", "category"]
        )
        self._index.fit([_record(doc) for doc in self.documents])
        # An empty KB leaves minsearch's vectorizers unfitted; search() stops before them then.
        self._query_vectorizers = (
            {name: QueryVectorizer(self._index.vectorizers[name]) for name in TEXT_FIELDS}
            if self.documents
            else {}
        )
        rows: dict[str, list[int]] = {}
        for row, doc in enumerate(self.documents):
            rows.setdefault(doc.topic, []).append(row)
        self._rows = {intent: np.array(r) for intent, r in rows.items()}
        # Within one intent every document has the same intent text: it cannot change their
        # order. The other boosted fields sit side by side, boosts applied, in one matrix per
        # intent, so a query's scores there are one sparse product instead of one per field.
        self._within_fields = [
            name for name, boost in self.settings.boosts.items() if boost and name != "intent_text"
        ]
        self._category = {doc.topic: doc.category or None for doc in self.documents}
        self.scope_threshold = (
            self.settings.scope_threshold if self.settings.scope_threshold is not None else 0.0
        )
        self.labelled = self._is_labelled()
        self._blocks = (
            {intent: self._within_intent(r) for intent, r in self._rows.items()}
            if self.labelled
            else {}
        )
        self.intent_model = self._fit_intent_model(background) if self.labelled else None
        self.speller = Speller(
            text for doc in self.documents for text in (*doc.phrasings, doc.response)
        )
        self._common_words: frozenset[str] = FUNCTION_WORDS
        self._kb_words: frozenset[str] = frozenset()
        if self.documents:
            self._fit_common_words()
        self._fit_hybrid(background, embeddings)

    @property
    def gate_threshold(self) -> float:
        """The threshold `SearchResult.scope_score` is held to: the intent model's, else the
        hybrid one."""
        return self.scope_threshold if self.intent_model is not None else self.hybrid_threshold

    def _is_labelled(self) -> bool:
        labels = [doc.intent for doc in self.documents]
        if not self.settings.use_intent_model or not all(labels) or len(self._rows) < 2:
            return False
        return float(np.median([len(r) for r in self._rows.values()])) >= (
            self.settings.min_phrasings
        )

    # ----- hybrid ranking -------------------------------------------------------------------

    def _fit_hybrid(self, background: Sequence[str], embeddings: EmbeddingCache | None) -> None:
        self._dense_questions = self._dense_answers = self._phrasing_starts = None
        self.hybrid_threshold = self.rescue_threshold = 0.0
        # The median best score of the calibration's in-scope texts: how well a question of
        # the KB's own typically scores (hybrid ranking only; None for the intent model's).
        self.typical_score: float | None = None
        self.scope_floor: float | None = None
        if not self.documents:
            return
        self._char = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, dtype=np.float32
        )
        # Every phrasing of an entry (its question, then its alternates) is a column; an
        # entry's question score is its best phrasing's, so one close alternate finds it.
        questions = [text for doc in self.documents for text in doc.phrasings]
        counts = [len(doc.phrasings) for doc in self.documents]
        self._phrasing_starts = (
            np.cumsum([0, *counts[:-1]]) if len(questions) > len(self.documents) else None
        )
        self._char.fit([*questions, *background])
        self._char_questions = self._char.transform(questions).T.tocsr()
        self._char_query = QueryVectorizer(self._char)
        cache = None
        if self.encoder is not None:
            cache = embeddings or EmbeddingCache(self.encoder, None)
            try:
                self._dense_questions = cache.embed_multi(questions).T.copy()
                self._dense_answers = cache.embed_multi(
                    [doc.response for doc in self.documents]
                ).T.copy()
            except EncoderError as exc:
                log.warning("embedding the KB failed (%s): retrieval is lexical only", exc)
                self.encoder = cache = None
        if background:
            self._calibrate_hybrid(list(background), cache)

    @property
    def scope_position(self) -> float:
        """Where the hybrid gate sits between its two medians: the settings' value, else the
        encoder's own, else 0.5 (see `RetrievalSettings.scope_position`)."""
        if self.settings.scope_position is not None:
            return self.settings.scope_position
        own = self.encoder.scope_position if self.encoder is not None else None
        return DEFAULT_SCOPE_POSITION if own is None else own

    def _best_scores(
        self,
        texts: list[str],
        cache: EmbeddingCache | None,
        own: Sequence[int] = (),
        without: Sequence[int] = (),
    ) -> np.ndarray:
        """Each text's best hybrid score over the KB, leaving out entry `own[i]` for text i,
        or only its phrasing `without[i]` (a column of the phrasings, see `_fit_hybrid`)."""
        vectors = None
        if cache is not None:
            try:
                vectors = cache.embed_multi(texts)
            except EncoderError:
                vectors = None
        zero = np.zeros(0, dtype=np.float32)
        best = []
        for i, text in enumerate(texts):
            vector = vectors[i] if vectors is not None else zero
            scores = self._scores(text, vector, without[i] if without else None)
            if own:
                scores[own[i]] = -np.inf
            best.append(scores.max() if len(scores) else 0.0)
        return np.array(best)

    def _calibrate_hybrid(self, background: list[str], cache: EmbeddingCache | None) -> None:
        """The hybrid gate, from the KB alone: between the background's median best score and
        the median best score of an entry's title against the other entries, and never below
        the background's `scope_floor_quantile`. A KB with MIN_HELD_OUT alternate questions
        or more takes the median best score of an alternate against the KB without it
        instead: new wordings of known entries, what the gate must let through. Every
        phrasing gives an off-topic question one more text to come close to; titles against
        other entries do not show that, and the gate then let more of it through."""
        outside = self._best_scores(background, cache)
        self.rescue_threshold = float(np.quantile(outside, self.settings.rescue_declined))
        if self.labelled:
            return  # the intent model's gate decides; the hybrid one only rescues
        rows = np.arange(len(self.documents))
        if len(rows) > self.settings.scope_sample:
            rows = np.random.default_rng(0).choice(rows, self.settings.scope_sample, False)
        if len(rows) < 2:
            self.hybrid_threshold = float(np.quantile(outside, 0.9))
            return
        held_out = self._alternate_columns()
        if len(held_out) >= MIN_HELD_OUT:
            if len(held_out) > self.settings.scope_sample:
                picked = np.random.default_rng(0).choice(
                    len(held_out), self.settings.scope_sample, False
                )
                held_out = [held_out[i] for i in sorted(picked)]
            texts = _without_house_words([text for _, text in held_out], background)
            columns = [column for column, _ in held_out]
            inside = self._best_scores(texts, cache, without=columns)
        else:
            titles = _without_house_words([self.documents[i].question for i in rows], background)
            inside = self._best_scores(titles, cache, own=list(rows))
        low, high = float(np.median(outside)), float(np.median(inside))
        self.typical_score = high
        self.scope_floor = float(np.quantile(outside, self.settings.scope_floor_quantile))
        self.hybrid_threshold = max(
            low + self.scope_position * max(high - low, 0.0), self.scope_floor
        )

    def in_scope_beside(self, result: SearchResult) -> bool:
        """Whether `result`, a question asked beside an in-scope one (a message's second
        question), is in scope. The message is already about the KB, so on the hybrid ranking
        the gate's floor is enough there (the background's `scope_floor_quantile`): "And will
        I lose my list if I do?" scores 0.58 beside "How do I cancel?" on the demo KB, under
        its 0.60 gate but over its 0.55 floor, where "And what's the weather in Paris?" scores
        0.29. The intent model's gate stays as it is."""
        if self.intent_model is not None or self.scope_floor is None:
            return result.in_scope
        return result.scope_score >= self.scope_floor

    def _alternate_columns(self) -> list[tuple[int, str]]:
        """Every alternate question's column among the phrasings, with its text."""
        columns, column = [], 0
        for doc in self.documents:
            columns += [(column + 1 + i, text) for i, text in enumerate(doc.alternates)]
            column += len(doc.phrasings)
        return columns

    def _fit_common_words(self) -> None:
        """The words `shares_words` never counts, and every word the KB uses. Never counted:
        English function words (`query.FUNCTION_WORDS`: on a 30-entry KB fewer than half the
        answers use "in" or "it") and the words half or more of the KB's answers use, which
        covers function words in any language on a larger KB. Found once here, so a follow-up
        costs no pass over the index."""
        vectorizer = self._index.vectorizers["response"]
        answers = self._index.text_matrices["response"]
        used_by = np.diff(answers.tocsc().indptr)
        self._common_words = FUNCTION_WORDS | {
            word for word, column in vectorizer.vocabulary_.items()
            if used_by[column] >= answers.shape[0] / 2
        }  # fmt: skip
        self._kb_words = frozenset(vectorizer.vocabulary_) | frozenset(
            self._index.vectorizers["question"].vocabulary_
        )

    def _words(self, text: str) -> set[str]:
        """`text`'s words as the minsearch index analyses them, without contractions: they are
        function words, and split at the apostrophe they leave a content-looking half ("won't"
        would share "won" with "who won the match?")."""
        analyzer = self._index.vectorizers["response"].build_analyzer()
        return set(analyzer(CONTRACTION.sub(" ", text)))

    def shares_words(self, query: str, document: Document) -> bool:
        """Whether `query` and `document` (its question, alternates or answer) share a
        distinctive word: not a function word, and used by fewer than half of the KB's
        answers, so "the" or "in" never counts (see `_fit_common_words`)."""
        shared = self._words(search_text(query)) & self._words(
            " ".join((*document.phrasings, document.response))
        )
        return bool(shared - self._common_words)

    def names_a_kb_word(self, query: str) -> bool:
        """Whether `query` has a distinctive word (see `shares_words`) that a question or
        answer of the KB uses: "How do I get my money back?" ("back") does, "What should I
        do?" has none."""
        return bool((self._words(search_text(query)) - self._common_words) & self._kb_words)

    def speaks_only_of_the_kb(self, query: str) -> bool:
        """Whether `query` has a word besides function words, and every such word is one a
        question or answer of the KB uses: it brings no topic of its own ("for how long?"),
        where "what about the weather?" brings "weather" and "yes" or "?" brings nothing."""
        content = self._words(search_text(query)) - FUNCTION_WORDS
        return bool(content) and content <= self._kb_words

    def query_vector(self, query: str) -> np.ndarray | None:
        """The query's dense vector, or None without an encoder or when the encoder fails."""
        if self.encoder is None or self._dense_questions is None:
            return None
        try:
            return self.encoder.embed([query])[0]
        except EncoderError as exc:
            log.warning("embedding a query failed (%s): ranked lexically", exc)
            return None

    def hybrid_scores(self, query: str, vector: np.ndarray | None = None) -> np.ndarray:
        """The hybrid score of every document, in KB order (see the module docstring).
        `vector` is the query's embedding when already known (an empty one: none)."""
        return self._scores(query, vector)

    def _scores(
        self, query: str, vector: np.ndarray | None = None, without: int | None = None
    ) -> np.ndarray:
        """`hybrid_scores`, leaving out the phrasing in column `without` when given."""
        s = self.settings
        columns, values = self._char_query.weights(query)
        scores = s.char_weight * (self._char_questions[columns].T @ values)
        vector = self.query_vector(query) if vector is None else vector
        dense = vector is not None and len(vector)
        if dense:
            scores += vector @ self._dense_questions
        if without is not None:
            scores[without] = -np.inf
        if self._phrasing_starts is not None:
            scores = np.maximum.reduceat(scores, self._phrasing_starts)
        if s.word_weight:
            scores += s.word_weight * self.lexical_scores(query) / sum(s.boosts.values())
        if dense:
            scores += s.answer_weight * (vector @ self._dense_answers)
        return scores

    def _search_hybrid(self, query: str, k: int) -> SearchResult:
        scores = self.hybrid_scores(query)
        top = top_k(scores, k)
        hits = [Hit(self.documents[i], float(scores[i])) for i in top]
        head = scores[top] - scores[top[0]]
        weights = np.exp(head * self.settings.hybrid_temperature)
        best = hits[0].document
        return SearchResult(
            hits=hits,
            intent=best.topic,
            category=best.category or None,
            confidence=round(float(weights[0] / weights.sum()), 4),
            in_scope=bool(scores[top[0]] >= self.hybrid_threshold),
            scope_score=round(float(scores[top[0]]), 4),
        )

    # ----- intent model ---------------------------------------------------------------------

    def _fit_intent_model(self, background: Sequence[str]) -> IntentModel:
        sample = _training_sample(
            self._rows, self.settings.max_train_per_intent, np.random.default_rng(0)
        )
        rows = np.concatenate(list(sample.values()))
        # Each intent's name is one more phrasing: it matters when a KB has only a few.
        names = sorted(self._rows)
        # Alternates are more phrasings of their intent, within the same cap per intent.
        taken: Counter[str] = Counter()
        phrasings = []
        for i in rows:
            intent = self.documents[i].intent
            for text in self.documents[i].phrasings:
                if taken[intent] < self.settings.max_train_per_intent:
                    taken[intent] += 1
                    phrasings.append((text, intent))
        questions = [text for text, _ in phrasings] + [n.replace("_", " ") for n in names]
        labels = np.array([intent for _, intent in phrasings] + names)
        vectorizer = TfidfVectorizer(
            analyzer="char", ngram_range=(1, 5), sublinear_tf=True, dtype=np.float32
        )
        matrix = vectorizer.fit_transform([*questions, *background])
        known, outside = matrix[: len(questions)], matrix[len(questions) :]
        dense = self._intent_embeddings([*questions, *background])
        known_dense = outside_dense = None
        if dense is not None:
            known_dense, outside_dense = dense[: len(questions)], dense[len(questions) :]
        model = IntentModel(
            vectorizer, known, list(labels), outside, self.settings, known_dense, outside_dense
        )
        if self.settings.scope_threshold is None:
            self.scope_threshold = self._calibrate(
                vectorizer, known, labels, outside, known_dense, outside_dense
            )
        return model

    def _intent_embeddings(self, texts: list[str]) -> np.ndarray | None:
        """The intent model's static embeddings of `texts` (WordLlama, whatever the hybrid
        ranking's encoder: a question's costs 0.05 ms), or None when the index has no
        encoder, the settings weigh them 0, or WordLlama does not load."""
        if self.encoder is None or not self.settings.intent_dense_weight:
            return None
        encoder = wordllama_encoder()
        return encoder.embed(texts) if encoder is not None else None

    def _calibrate(
        self,
        vectorizer: TfidfVectorizer,
        known: sparse.csr_matrix,
        labels: np.ndarray,
        outside: sparse.csr_matrix,
        known_dense: np.ndarray | None = None,
        outside_dense: np.ndarray | None = None,
    ) -> float:
        """Fit a model on half of the training sample and score the other half: unseen real
        questions, the kind the gate must let through."""
        position = np.zeros(len(labels), dtype=int)
        for intent in set(labels):
            members = np.flatnonzero(labels == intent)
            position[members] = np.arange(len(members))
        # Every intent keeps its first phrasing for training; the odd ones are held out.
        held_out = position % 2 == 1
        if not held_out.any():
            return self.settings.scope_floor
        fit = ~held_out
        dense = known_dense is not None and outside_dense is not None
        half = IntentModel(
            vectorizer,
            known[fit],
            list(labels[fit]),
            outside[::2],
            self.settings,
            known_dense[fit] if dense else None,
            outside_dense[::2] if dense else None,
        )
        scores = half.scope_scores(known[held_out], known_dense[held_out] if dense else None)
        calibrated = float(np.quantile(scores, 1 - self.settings.scope_keep))
        return max(calibrated - self.settings.scope_margin, self.settings.scope_floor)

    def _within_intent(self, rows: np.ndarray) -> sparse.csr_matrix:
        parts = [
            self.settings.boosts[name] * self._index.text_matrices[name][rows]
            for name in self._within_fields
        ]
        return sparse.hstack(parts, format="csr") if parts else sparse.csr_matrix((len(rows), 0))

    def _within_vector(self, query: str) -> np.ndarray:
        """The query in the columns of the per-intent matrices: its field vectors end to end."""
        vectorizers = [self._query_vectorizers[name] for name in self._within_fields]
        vector = np.zeros(sum(vectorizer.size for vectorizer in vectorizers))
        offset = 0
        for vectorizer in vectorizers:
            columns, values = vectorizer.weights(query)
            vector[offset + columns] = values
            offset += vectorizer.size
        return vector

    def lexical_scores(self, query: str) -> np.ndarray:
        """Scores for every document, in KB order (the plain-minsearch baseline): boosted
        cosine similarity over the minsearch index's own fitted TF-IDF (L2-normalised, so a
        dot product is the cosine)."""
        scores = np.zeros(len(self.documents))
        for name, boost in self.settings.boosts.items():
            if boost:
                vectorizer = self._query_vectorizers[name]
                vector = vectorizer.dense(*vectorizer.weights(query))
                scores += boost * (self._index.text_matrices[name] @ vector)
        return scores

    def search(self, query: str, k: int = 5) -> SearchResult:
        """The top `k` hits for `query`, best first, with intent, confidence and scope. A
        clause saying what the customer does not want is left out (`query.search_text`)."""
        if not self.documents or k < 1:
            return SearchResult([], None, None, 0.0, False, 0.0)
        query = search_text(query)
        if self.intent_model is None:
            if self.settings.hybrid:
                return self._search_hybrid(query, k)
            return self._search_lexical(query, k)
        prediction = self.intent_model.predict(query)
        top = prediction.ranked[0]
        in_scope = prediction.scope_score >= self.scope_threshold
        if not in_scope and self.settings.hybrid:
            in_scope = bool(self.hybrid_scores(query).max() >= self.rescue_threshold)
        return SearchResult(
            hits=self._intent_hits(self._within_vector(query), prediction.ranked, k),
            intent=top,
            category=self._category[top],
            confidence=round(prediction.confidence, 4),
            in_scope=in_scope,
            scope_score=round(prediction.scope_score, 4),
        )

    def _intent_hits(self, vector: np.ndarray, ranked: list[str], k: int) -> list[Hit]:
        """The best k - alternates entries of the top intent, then the best entry of each
        runner-up intent; short intents leave their places to the next ones."""
        alternates = min(self.settings.alternates, len(ranked) - 1, k - 1)
        quotas = [k - alternates] + [1] * alternates
        hits: list[Hit] = []
        for position, intent in enumerate(ranked):
            if len(hits) >= k:
                break
            scores = self._blocks[intent] @ vector
            quota = quotas[position] if position < len(quotas) else k - len(hits)
            order = np.argsort(-scores, kind="stable")[:quota]
            rows = self._rows[intent]
            hits += [Hit(self.documents[rows[i]], float(scores[i])) for i in order]
        return hits[:k]

    def _search_lexical(self, query: str, k: int) -> SearchResult:
        scores = self.lexical_scores(query)
        top = top_k(scores, k)
        hits = [Hit(self.documents[i], float(scores[i])) for i in top if scores[i] > 0]
        if not hits:
            return SearchResult([], None, None, 0.0, False, 0.0)
        best = hits[0].document
        mass = sum(hit.score for hit in hits)
        agreeing = sum(hit.score for hit in hits if hit.document.topic == best.topic)
        confidence = round(agreeing / mass, 4)
        return SearchResult(
            hits, best.topic, best.category or None, confidence, True, hits[0].score
        )

    def __getstate__(self) -> dict:
        # The encoder is a model, not index state: it is attached again after loading.
        return {**self.__dict__, "encoder": None}

    def save(self, path: Path) -> None:
        """Pickle the fitted retriever (without its encoder), atomically. Load only files
        you wrote: pickle runs code."""
        partial = path.with_suffix(".part")
        with partial.open("wb") as handle:
            pickle.dump(self, handle, protocol=pickle.HIGHEST_PROTOCOL)
        partial.replace(path)

    @staticmethod
    def load(path: Path, encoder: Encoder | None = None) -> Retriever:
        """A retriever saved by `save`, with `encoder` attached; raises TypeError for a file
        that holds something else."""
        with path.open("rb") as handle:
            retriever = pickle.load(handle)  # noqa: S301 - our own cache file, see save()
        if not isinstance(retriever, Retriever):
            raise TypeError(f"{path} does not hold a Retriever")
        retriever.encoder = encoder
        return retriever


def _record(doc: Document) -> dict[str, str]:
    return {
        "question": " ".join(doc.phrasings),
        "response": doc.response,
        "intent_text": doc.intent.replace("_", " "),
        "intent": doc.intent,
        "category": doc.category,
    }


def _without_house_words(titles: list[str], background: Sequence[str]) -> list[str]:
    """`titles` without the words a third or more of them use and off-topic text never does:
    the product's name ("How do I cancel my Nimbus TV membership?"), which makes a KB's
    topics look alike to each other, though customers seldom write it."""

    def words(text: str) -> set[str]:
        return {w.lower() for w in LETTERS.findall(text)}

    background_words = set().union(*map(words, background))
    counts = Counter(word for title in titles for word in words(title))
    house = {w for w, n in counts.items() if n >= len(titles) / 3 and w not in background_words}
    if not house:
        return titles
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(house))) + r")\b", re.I)
    return [pattern.sub(" ", title) for title in titles]
