"""Retrieval: ranking a knowledge base for a question (lexical, dense, intent) and its scope."""

from assistant.retrieval.encoders import (
    EmbeddingCache,
    Encoder,
    EncoderError,
    make_encoder,
    wordllama_encoder,
)
from assistant.retrieval.retriever import (
    Hit,
    RetrievalSettings,
    Retriever,
    SearchResult,
)

__all__ = [
    "EmbeddingCache",
    "Encoder",
    "EncoderError",
    "Hit",
    "RetrievalSettings",
    "Retriever",
    "SearchResult",
    "make_encoder",
    "wordllama_encoder",
]
