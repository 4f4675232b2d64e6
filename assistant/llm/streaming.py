"""Relaying a streamed reply from a model server: what the `openai` and `ollama` providers
share, each keeping only how its own chunks read (a `ChunkReader`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from assistant.llm.base import Completion, ProviderError, start_deadline


class ChunkReader(Protocol):
    """One stream's chunks in a provider's wire format, read in order; it keeps whatever the
    chunks say besides text (model, usage, finish reason) for `completion`."""

    def read(self, chunk: Any) -> Iterator[str]:
        """The non-empty text deltas `chunk` carries, in order; none for a chunk without text."""
        ...

    def completion(self, text: str, started: float) -> Completion:
        """The final Completion for the whole streamed `text`, `started` being the call's
        start on time.perf_counter(). Raises IncompleteStream when no chunk said the model
        had finished."""
        ...


def relay_stream(
    open_chunks: Callable[[], Iterable[Any]],
    reader: ChunkReader,
    *,
    deadline: float | None,
    errors: tuple[type[Exception], ...],
) -> Iterator[str | Completion]:
    """`Provider.stream` for a model server: text deltas as `open_chunks()`'s chunks bring
    them, then the `reader`'s Completion. The call, from the request on, is held to a deadline
    of `deadline` seconds (None: none). Any of the provider's `errors` (its client's, the
    network's, a malformed chunk's) is raised as a ProviderError named for it; a ProviderError
    of the reader's own (IncompleteStream, an empty completion) is raised as it is."""
    started = time.perf_counter()
    parts: list[str] = []
    chunks = None
    start_deadline(deadline)
    try:
        chunks = open_chunks()
        for chunk in chunks:
            for delta in reader.read(chunk):
                parts.append(delta)
                yield delta
        completion = reader.completion("".join(parts), started)
    except errors as exc:
        raise ProviderError(type(exc).__name__) from exc
    finally:
        # Also when the caller stops reading (the customer left): the upstream request
        # ends now instead of generating to the end for nobody.
        if hasattr(chunks, "close"):
            chunks.close()
    yield completion
