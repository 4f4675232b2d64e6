"""The `ollama` provider: Ollama's native API through the `ollama` client, and the probe that
tells whether a server has a model."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import httpx
import ollama

from assistant.config import Settings
from assistant.llm.base import (
    DEADLINE_HOOKS,
    MALFORMED,
    TEMPERATURE,
    Completion,
    IncompleteStream,
    Message,
    ProviderError,
    call_with_retries,
    finish,
    start_deadline,
)
from assistant.llm.streaming import relay_stream
from assistant.llm.tokens import default_token_counter


def _ollama_status(exc: Exception) -> int | None:
    return exc.status_code if isinstance(exc, ollama.ResponseError) else None


# How a call fails, raised as a ProviderError: the server unreachable or refusing, a reply of
# the wrong shape.
_FAILURES = (ConnectionError, httpx.HTTPError, ollama.ResponseError, *MALFORMED)


def ollama_model_matches(wanted: str, present: str) -> bool:
    """Ollama names a model `name:tag`; a name without a tag means `:latest`."""
    return present == wanted or (":" not in wanted and present == f"{wanted}:latest")


def probe_ollama(base_url: str, timeout: float) -> list[str] | None:
    """The models an Ollama server has, or None when nothing answers within `timeout`."""
    try:
        with ollama.Client(host=base_url, timeout=timeout) as client:
            return [m.model or "" for m in client.list().models]
    except (ConnectionError, httpx.HTTPError, ollama.ResponseError):
        return None


class OllamaProvider:
    """Ollama's native API. The first request after Ollama starts loads the model into memory,
    which can take minutes: the read timeout is OLLAMA_READ_TIMEOUT (300 s by default)."""

    name = "ollama"
    context_entries = None

    def __init__(self, settings: Settings):
        self.model = settings.ollama_model
        self.base_url = settings.ollama_base_url
        self._max_tokens = settings.llm_max_tokens
        self._retries = settings.llm_max_retries
        self._backoff = settings.llm_retry_backoff
        self._deadline = settings.llm_deadline
        self._client = ollama.Client(
            host=settings.ollama_base_url,
            timeout=httpx.Timeout(
                settings.ollama_read_timeout, connect=settings.llm_connect_timeout
            ),
            event_hooks=DEADLINE_HOOKS,
        )

    def models(self) -> list[str]:
        """The models the server has; raises ProviderError when it cannot be reached."""
        try:
            return [m.model or "" for m in self._client.list().models]
        except (ConnectionError, httpx.HTTPError, ollama.ResponseError) as exc:
            raise ProviderError(type(exc).__name__) from exc

    def model_present(self) -> bool:
        return any(ollama_model_matches(self.model, name) for name in self.models())

    def pull(self, progress: Callable[[str, int | None, int | None], None]) -> None:
        """Pull the configured model, reporting (status, completed bytes, total bytes)."""
        try:
            for update in self._client.pull(self.model, stream=True):
                progress(update.status or "", update.completed, update.total)
        except (ConnectionError, httpx.HTTPError, ollama.ResponseError) as exc:
            raise ProviderError(f"{type(exc).__name__}: {exc}") from exc

    def _chat(self, messages: Sequence[Message], stream: bool, **extra: Any) -> Any:
        return call_with_retries(
            lambda: self._client.chat(
                model=self.model,
                messages=list(messages),
                stream=stream,
                options={"temperature": TEMPERATURE, "num_predict": self._max_tokens},
                **extra,
            ),
            retries=self._retries,
            backoff=self._backoff,
            status_of=_ollama_status,
        )

    def complete(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Completion:
        return self._complete(messages)

    def complete_json(self, messages: Sequence[Message], schema: dict[str, Any]) -> Completion:
        """`complete`, with the reply held to the JSON `schema` (Ollama's `format`)."""
        return self._complete(messages, format=schema)

    def _complete(self, messages: Sequence[Message], **extra: Any) -> Completion:
        started = time.perf_counter()
        start_deadline(self._deadline)
        try:
            response = self._chat(messages, stream=False, **extra)
            text = response.message.content or ""
            if not isinstance(text, str):
                raise TypeError(f"message content is {type(text).__name__}, not text")
            return self._completion(messages, text, response, started)
        except _FAILURES as exc:
            raise ProviderError(type(exc).__name__) from exc

    def stream(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Iterator[str | Completion]:
        return relay_stream(
            lambda: self._chat(messages, stream=True),
            _ChatParts(partial(self._completion, messages)),
            deadline=self._deadline,
            errors=_FAILURES,
        )

    def _completion(
        self, messages: Sequence[Message], text: str, response: Any, started: float
    ) -> Completion:
        # Ollama leaves prompt_eval_count out when the whole prompt came from its cache.
        prompt_tokens = getattr(response, "prompt_eval_count", None)
        completion_tokens = getattr(response, "eval_count", None)
        estimated = prompt_tokens is None or completion_tokens is None
        counter = default_token_counter()
        if prompt_tokens is None:
            prompt_tokens = counter.count_messages(messages)
        if completion_tokens is None:
            completion_tokens = counter.count(text)
        model = getattr(response, "model", None) or self.model
        completion = finish(text, model, prompt_tokens, completion_tokens, started, estimated)
        return replace(completion, truncated=getattr(response, "done_reason", None) == "length")


class _ChatParts:
    """The native chat stream's parts: each one's text; the last, marked done, carries the
    token counts and the reason the model stopped."""

    def __init__(self, complete: Callable[[str, Any, float], Completion]):
        self._complete = complete
        self._final: Any = None

    def read(self, part: Any) -> Iterator[str]:
        if part.message and part.message.content:
            yield part.message.content
        if part.done:
            self._final = part

    def completion(self, text: str, started: float) -> Completion:
        if self._final is None:
            raise IncompleteStream("the stream ended before the model was done")
        return self._complete(text, self._final, started)
