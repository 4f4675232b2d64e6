"""Retrieval: minsearch for the lexical ranking, an intent model to make it right, and an
out-of-scope gate. Returns ranked hits, the predicted intent and a confidence in [0, 1]."""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import minsearch
import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from assistant.knowledge import Document

TEXT_FIELDS = ("question", "intent_text", "response")
OUT_OF_DOMAIN = "__out_of_domain__"


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
    # The scope score adds this much of that similarity.
    similarity_weight: float = 1.0
    # Share of unseen real questions the out-of-scope gate must let through; the threshold is
    # calibrated on held-out KB questions at index time, so it adapts to each KB.
    scope_keep: float = 0.99
    # Taken off the calibrated threshold: the far tail of a few hundred scores is noise.
    scope_margin: float = 0.3
    # A KB with few phrasings per intent calibrates too low (its half-model is weak): floor.
    scope_floor: float = -0.5
    # A fixed threshold instead of the calibrated one.
    scope_threshold: float | None = None
    # Below this confidence an in-scope answer is handed to a person instead of guessed.
    handoff_threshold: float = 0.25

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


class IntentModel:
    """Character n-grams, across word boundaries, survive typos and run-together words
    ("cancle my subscripton", "wanna talk to human"); a linear SVM over them separates the
    KB's intents and, when given background text, an out-of-domain class."""

    def __init__(
        self,
        vectorizer: TfidfVectorizer,
        known: sparse.csr_matrix,
        labels: Sequence[str],
        background: sparse.csr_matrix,
        settings: RetrievalSettings,
    ):
        self.settings = settings
        self._vectorizer = vectorizer
        svm = LinearSVC(C=settings.svm_c)
        svm.fit(
            sparse.vstack([known, background]).tocsr(),
            [*labels, *[OUT_OF_DOMAIN] * background.shape[0]],
        )
        classes = [str(c) for c in svm.classes_]
        # Kept as plain arrays: one sparse-dense product per query, without sklearn's
        # per-call input validation, which costs more than the product itself.
        coef = np.atleast_2d(svm.coef_)
        intercept = np.atleast_1d(svm.intercept_)
        if len(classes) == 2:
            coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
        self._coef = np.ascontiguousarray(coef.T, dtype=np.float32)
        self._intercept = intercept.astype(np.float32)
        self._inside = np.array([i for i, c in enumerate(classes) if c != OUT_OF_DOMAIN])
        self._outside = classes.index(OUT_OF_DOMAIN) if OUT_OF_DOMAIN in classes else None
        self.classes = [classes[i] for i in self._inside]
        label_array = np.array(labels)
        # Each class's phrasings, stored transposed: transposing per query copies the matrix.
        self._examples_t = [known[label_array == c].T.tocsr() for c in self.classes]

    def _predict(self, vectors: sparse.csr_matrix) -> list[IntentPrediction]:
        all_margins = np.asarray(vectors @ self._coef) + self._intercept
        margins = all_margins[:, self._inside]
        predictions = []
        for row in range(vectors.shape[0]):
            order = np.argsort(-margins[row])
            best = order[0]
            weights = np.exp((margins[row] - margins[row, best]) * self.settings.temperature)
            outside = all_margins[row, self._outside] if self._outside is not None else 0.0
            nearest = (vectors[row] @ self._examples_t[best]).max()
            predictions.append(
                IntentPrediction(
                    ranked=[self.classes[i] for i in order],
                    confidence=float(weights.max() / weights.sum()),
                    scope_score=float(margins[row, best] - outside)
                    + self.settings.similarity_weight * float(nearest),
                )
            )
        return predictions

    def predict(self, query: str) -> IntentPrediction:
        return self._predict(self._vectorizer.transform([query]))[0]

    def scope_scores(self, vectors: sparse.csr_matrix) -> list[float]:
        return [p.scope_score for p in self._predict(vectors)]


def _training_sample(
    rows: Mapping[str, np.ndarray], cap: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    return {
        intent: ids if len(ids) <= cap else rng.choice(ids, cap, replace=False)
        for intent, ids in rows.items()
    }


class Retriever:
    """Ranks the KB for a query. No category filter: the intent model narrows the search, and
    its runner-up intents stay in the hits, so one wrong guess never hides the answer."""

    def __init__(
        self,
        documents: Sequence[Document],
        settings: RetrievalSettings | None = None,
        background: Sequence[str] = (),
    ):
        self.documents = list(documents)
        self.settings = settings or RetrievalSettings()
        self._index = minsearch.Index(
            text_fields=list(TEXT_FIELDS), keyword_fields=["intent", "category"]
        )
        self._index.fit([_record(doc) for doc in self.documents])
        self._rows: dict[str, np.ndarray] = {}
        for row, doc in enumerate(self.documents):
            self._rows.setdefault(doc.intent, []).append(row)
        self._rows = {intent: np.array(rows) for intent, rows in self._rows.items()}
        self._blocks = {
            intent: {name: self._index.text_matrices[name][rows] for name in TEXT_FIELDS}
            for intent, rows in self._rows.items()
        }
        self._category = {doc.intent: doc.category for doc in self.documents}
        self.scope_threshold = (
            self.settings.scope_threshold if self.settings.scope_threshold is not None else 0.0
        )
        self.intent_model = self._fit_intent_model(background)

    def _fit_intent_model(self, background: Sequence[str]) -> IntentModel | None:
        if not self.settings.use_intent_model or len(self._rows) < 2:
            return None
        sample = _training_sample(
            self._rows, self.settings.max_train_per_intent, np.random.default_rng(0)
        )
        rows = np.concatenate(list(sample.values()))
        # Each intent's name is one more phrasing: it matters when a KB has only a few.
        names = sorted(self._rows)
        questions = [self.documents[i].question for i in rows] + [
            n.replace("_", " ") for n in names
        ]
        labels = np.array([self.documents[i].intent for i in rows] + names)
        vectorizer = TfidfVectorizer(
            analyzer="char", ngram_range=(1, 5), sublinear_tf=True, dtype=np.float32
        )
        matrix = vectorizer.fit_transform([*questions, *background])
        known, outside = matrix[: len(questions)], matrix[len(questions) :]
        model = IntentModel(vectorizer, known, list(labels), outside, self.settings)
        if self.settings.scope_threshold is None:
            self.scope_threshold = self._calibrate(vectorizer, known, labels, outside)
        return model

    def _calibrate(
        self,
        vectorizer: TfidfVectorizer,
        known: sparse.csr_matrix,
        labels: np.ndarray,
        outside: sparse.csr_matrix,
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
        half = IntentModel(vectorizer, known[fit], list(labels[fit]), outside[::2], self.settings)
        scores = half.scope_scores(known[held_out])
        calibrated = float(np.quantile(scores, 1 - self.settings.scope_keep))
        return max(calibrated - self.settings.scope_margin, self.settings.scope_floor)

    def _query_vectors(self, query: str, within_intent: bool = False) -> dict[str, np.ndarray]:
        # Within one intent every document has the same intent text: it cannot change the order.
        skip = {"intent_text"} if within_intent else set()
        return {
            name: self._index.vectorizers[name].transform([query]).toarray().ravel()
            for name, boost in self.settings.boosts.items()
            if boost and name not in skip
        }

    def _lexical(self, vectors: dict[str, np.ndarray], intent: str) -> np.ndarray:
        """Boosted cosine similarity of the query to one intent's documents, from the
        minsearch index's own fitted TF-IDF (L2-normalised, so a dot product is the cosine)."""
        block = self._blocks[intent]
        total = np.zeros(len(self._rows[intent]))
        for name, vector in vectors.items():
            total += self.settings.boosts[name] * (block[name] @ vector)
        return total

    def lexical_scores(self, query: str) -> np.ndarray:
        """Scores for every document, in KB order (the plain-minsearch baseline)."""
        vectors = self._query_vectors(query)
        scores = np.zeros(len(self.documents))
        for intent, rows in self._rows.items():
            scores[rows] = self._lexical(vectors, intent)
        return scores

    def search(self, query: str, k: int = 5) -> SearchResult:
        if not self.documents or k < 1:
            return SearchResult([], None, None, 0.0, False, 0.0)
        if self.intent_model is None:
            return self._search_lexical(query, k)
        prediction = self.intent_model.predict(query)
        top = prediction.ranked[0]
        return SearchResult(
            hits=self._intent_hits(self._query_vectors(query, True), prediction.ranked, k),
            intent=top,
            category=self._category[top],
            confidence=round(prediction.confidence, 4),
            in_scope=prediction.scope_score >= self.scope_threshold,
            scope_score=round(prediction.scope_score, 4),
        )

    def _intent_hits(self, vectors: dict[str, np.ndarray], ranked: list[str], k: int) -> list[Hit]:
        """The best k - alternates entries of the top intent, then the best entry of each
        runner-up intent; short intents leave their places to the next ones."""
        alternates = min(self.settings.alternates, len(ranked) - 1, k - 1)
        quotas = [k - alternates] + [1] * alternates
        hits: list[Hit] = []
        for position, intent in enumerate(ranked):
            if len(hits) >= k:
                break
            scores = self._lexical(vectors, intent)
            quota = quotas[position] if position < len(quotas) else k - len(hits)
            order = np.argsort(-scores, kind="stable")[:quota]
            rows = self._rows[intent]
            hits += [Hit(self.documents[rows[i]], float(scores[i])) for i in order]
        return hits[:k]

    def _search_lexical(self, query: str, k: int) -> SearchResult:
        scores = self.lexical_scores(query)
        top = np.argsort(-scores, kind="stable")[:k]
        hits = [Hit(self.documents[i], float(scores[i])) for i in top if scores[i] > 0]
        if not hits:
            return SearchResult([], None, None, 0.0, False, 0.0)
        best = hits[0].document
        mass = sum(hit.score for hit in hits)
        agreeing = sum(hit.score for hit in hits if hit.document.intent == best.intent)
        confidence = round(agreeing / mass, 4)
        return SearchResult(hits, best.intent, best.category, confidence, True, hits[0].score)

    def save(self, path: Path) -> None:
        """Pickle the fitted retriever. Load only files you wrote: pickle runs code."""
        with path.open("wb") as handle:
            pickle.dump(self, handle, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def load(path: Path) -> Retriever:
        with path.open("rb") as handle:
            retriever = pickle.load(handle)  # noqa: S301 - our own cache file, see save()
        if not isinstance(retriever, Retriever):
            raise TypeError(f"{path} does not hold a Retriever")
        return retriever


def _record(doc: Document) -> dict[str, str]:
    return {
        "question": doc.question,
        "response": doc.response,
        "intent_text": doc.intent.replace("_", " "),
        "intent": doc.intent,
        "category": doc.category,
    }
