"""Retrieval: a minsearch index over the knowledge base, ranked hits, a predicted intent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import minsearch
import numpy as np

from assistant.knowledge import Document

# Customers' questions look like the KB's questions far more than like its answers.
DEFAULT_BOOSTS: Mapping[str, float] = {"question": 3.0, "intent_text": 1.5, "response": 0.5}
TEXT_FIELDS = ("question", "intent_text", "response")


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


class Retriever:
    """Ranks every document for a query; there is no category filter, so no question is lost
    to a wrong guess of its category."""

    def __init__(self, documents: Sequence[Document], boosts: Mapping[str, float] | None = None):
        self.documents = list(documents)
        self.boosts = dict(boosts or DEFAULT_BOOSTS)
        self._index = minsearch.Index(
            text_fields=list(TEXT_FIELDS), keyword_fields=["intent", "category"]
        )
        self._index.fit([_record(doc) for doc in self.documents])

    def scores(self, query: str) -> np.ndarray:
        """Boosted cosine similarity per document, from the index's own fitted TF-IDF.

        The vectors are L2-normalised, so a sparse dot product equals minsearch's cosine
        similarity and skips its per-call input validation.
        """
        total = np.zeros(len(self.documents))
        for name, boost in self.boosts.items():
            if boost and name in self._index.text_matrices:
                query_vector = self._index.vectorizers[name].transform([query])
                matrix = self._index.text_matrices[name]
                total += boost * (matrix @ query_vector.T).toarray().ravel()
        return total

    def search(self, query: str, k: int = 5) -> SearchResult:
        if not self.documents:
            return SearchResult([], None, None, 0.0)
        scores = self.scores(query)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        hits = [Hit(self.documents[i], float(scores[i])) for i in top if scores[i] > 0]
        if not hits:
            return SearchResult([], None, None, 0.0)
        best = hits[0].document
        mass = sum(hit.score for hit in hits)
        agreeing = sum(hit.score for hit in hits if hit.document.intent == best.intent)
        return SearchResult(hits, best.intent, best.category, round(agreeing / mass, 4))


def _record(doc: Document) -> dict[str, str]:
    return {
        "question": doc.question,
        "response": doc.response,
        "intent_text": doc.intent.replace("_", " "),
        "intent": doc.intent,
        "category": doc.category,
    }
