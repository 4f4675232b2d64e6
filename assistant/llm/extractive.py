"""The `extractive` provider: no model, the best knowledge-base answer verbatim."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from assistant.llm.base import Completion, Message, ProviderError


class ExtractiveProvider:
    """No model: the best knowledge-base answer, verbatim. Always available, never wrong about
    what the KB says."""

    name = "extractive"
    model = "extractive"
    context_entries = None

    def complete(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Completion:
        started = time.perf_counter()
        if not references:
            raise ProviderError("extractive provider needs at least one reference")
        return Completion(references[0], self.model, 0, 0, time.perf_counter() - started)

    def stream(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Iterator[str | Completion]:
        completion = self.complete(messages, references=references)
        yield completion.text
        yield completion
