"""The `openai` provider: OpenAI, or any server that speaks its chat API (Ollama's /v1,
llama.cpp, vLLM)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import httpx
import openai

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
from assistant.llm.pricing import PriceTable
from assistant.llm.streaming import relay_stream
from assistant.llm.tokens import default_token_counter

log = logging.getLogger(__name__)


def _openai_status(exc: Exception) -> int | None:
    return exc.status_code if isinstance(exc, openai.APIStatusError) else None


def _openai_retry_after(exc: Exception) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except ValueError:
        return None


# Model families that take `max_completion_tokens` and refuse sampling parameters
# (OpenAI's reasoning models): gpt-5, o1, o3, o4 and their dated or sized variants.
REASONING_MODEL = re.compile(r"^(?:gpt-5|o[1-9])(?:$|[-.:])")


# Never dropped on a server's say-so: without them the request is another request.
ESSENTIAL = frozenset({"stream"})


# OpenAI's reasoning models spend hidden reasoning tokens out of `max_completion_tokens`: they
# get this many on top of the answer's LLM_MAX_TOKENS, and are asked to reason briefly.
REASONING_TOKENS = 2048


def _model_family(model: str) -> str:
    return model.rsplit("/", 1)[-1].lower()


# How a call fails, raised as a ProviderError: the SDK's errors, the network's, a reply of the
# wrong shape.
_FAILURES = (openai.OpenAIError, httpx.HTTPError, *MALFORMED)


class OpenAICompatibleProvider:
    """OpenAI, or any server that speaks its chat API: Ollama's /v1, llama.cpp, vLLM.

    OpenAI itself is sent `max_completion_tokens`; its reasoning models (gpt-5, o-series) get no
    `temperature`, which they refuse. Other servers get `max_tokens`, which they all read. A 400
    that names a parameter as unsupported is retried once without it, and the parameter is left
    out from then on. Every call, retries and waits included, ends within LLM_DEADLINE.
    """

    name = "openai"
    context_entries = None

    def __init__(self, settings: Settings, prices: PriceTable | None = None):
        self.model = settings.openai_model
        self._max_tokens = settings.llm_max_tokens
        self._retries = settings.llm_max_retries
        self._backoff = settings.llm_retry_backoff
        self._deadline = settings.llm_deadline
        self._prices = prices if prices is not None else PriceTable.load(settings.prices_path)
        base_url = settings.openai_base_url or ""
        self._official = not base_url or "api.openai.com" in base_url
        self._refused: set[str] = set()
        timeout = httpx.Timeout(settings.llm_read_timeout, connect=settings.llm_connect_timeout)
        self._client = openai.OpenAI(
            # Local OpenAI-compatible servers ignore the key but the SDK insists on one.
            api_key=settings.openai_api_key or "not-needed",
            base_url=settings.openai_base_url,
            timeout=timeout,
            # Retries are ours (call_with_retries): the same policy for every provider.
            max_retries=0,
            # The SDK's own limits, not httpx's 100 connections and 20 kept alive: a gevent
            # worker holds hundreds of answers waiting on the model at once.
            http_client=httpx.Client(
                timeout=timeout,
                event_hooks=DEADLINE_HOOKS,
                limits=openai.DEFAULT_CONNECTION_LIMITS,
            ),
        )

    def parameters(self) -> dict[str, Any]:
        """The generation parameters this model is sent (see the class docstring)."""
        reasoning = bool(REASONING_MODEL.match(_model_family(self.model)))
        tokens = "max_completion_tokens" if reasoning or self._official else "max_tokens"
        params: dict[str, Any] = {tokens: self._max_tokens}
        if reasoning:
            params[tokens] += REASONING_TOKENS
            params["reasoning_effort"] = "low"
        else:
            params["temperature"] = TEMPERATURE
        if "max_tokens" in self._refused and "max_tokens" in params:
            params["max_completion_tokens"] = params.pop("max_tokens")
        return params

    def _refused_parameter(self, exc: Exception, sent: dict[str, Any]) -> str | None:
        """The parameter a 400 (or a validating server's 422) says this model or server does
        not support, when it is one we sent."""
        if not isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
            return None
        named = getattr(exc, "param", None)
        if named in sent and named not in ESSENTIAL:
            return named
        message = str(getattr(exc, "message", "") or exc)
        if isinstance(exc, openai.BadRequestError) and "unsupported" not in message.lower():
            return None
        # Whole quoted names only: "'stream_options'" must not read as "stream".
        quoted = set(re.findall(r"['\"`]([a-z_]+)['\"`]", message))
        return next((name for name in sent if name in quoted and name not in ESSENTIAL), None)

    def _sent(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in {**self.parameters(), **extra}.items() if k not in self._refused}

    def _create(self, messages: Sequence[Message], **extra: Any) -> Any:
        sent = self._sent(extra)

        def with_retries() -> Any:
            return call_with_retries(
                lambda: self._client.chat.completions.create(
                    model=self.model, messages=list(messages), **sent
                ),
                retries=self._retries,
                backoff=self._backoff,
                status_of=_openai_status,
                retry_after_of=_openai_retry_after,
            )

        try:
            return with_retries()
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            refused = self._refused_parameter(exc, sent)
            if refused is None:
                raise
            log.warning("%s refuses %r: sent without it from now on", self.model, refused)
            self._refused.add(refused)
            sent = self._sent(extra)
            return with_retries()

    def complete(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Completion:
        return self._complete(messages)

    def complete_json(self, messages: Sequence[Message], schema: dict[str, Any]) -> Completion:
        """`complete`, asking for a reply that follows the JSON `schema` (structured output):
        OpenAI's `json_schema` format for OpenAI, and `json_object` with the schema beside it
        for other servers (llama.cpp constrains its output to it; llama-cpp-python refuses
        `json_schema`). A server that refuses `response_format` is asked without it, from
        then on."""
        if self._official:
            wanted = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema, "strict": True},
            }
        else:
            wanted = {"type": "json_object", "schema": schema}
        return self._complete(messages, response_format=wanted)

    def _complete(self, messages: Sequence[Message], **extra: Any) -> Completion:
        started = time.perf_counter()
        start_deadline(self._deadline)
        try:
            response = self._create(messages, **extra)
            choice = response.choices[0] if response.choices else None
            text = (choice.message.content or "") if choice is not None else ""
            if not isinstance(text, str):
                raise TypeError(f"message content is {type(text).__name__}, not text")
            completion = self._completion(messages, text, response.model, response.usage, started)
            return replace(completion, truncated=getattr(choice, "finish_reason", None) == "length")
        except _FAILURES as exc:
            raise ProviderError(type(exc).__name__) from exc

    def stream(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Iterator[str | Completion]:
        return relay_stream(
            # include_usage asks for a last chunk with the usage; servers without it omit it.
            lambda: self._create(messages, stream=True, stream_options={"include_usage": True}),
            _ChatChunks(partial(self._completion, messages)),
            deadline=self._deadline,
            errors=_FAILURES,
        )

    def _completion(
        self,
        messages: Sequence[Message],
        text: str,
        model: str | None,
        usage: Any,
        started: float,
    ) -> Completion:
        if usage is not None and usage.prompt_tokens:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens or 0
        else:
            counter = default_token_counter()
            prompt_tokens = counter.count_messages(messages)
            completion_tokens = counter.count(text)
        model = model if isinstance(model, str) and model else self.model
        return finish(
            text,
            model,
            int(prompt_tokens),
            int(completion_tokens),
            started,
            estimated=usage is None or not usage.prompt_tokens,
            cost_usd=self._prices.cost(self.name, model, prompt_tokens, completion_tokens),
        )


class _ChatChunks:
    """The chat API's stream chunks: each choice's text and finish reason; the model's name
    and, from servers that send it, the usage (in a last chunk of its own)."""

    def __init__(self, complete: Callable[[str, str | None, Any, float], Completion]):
        self._complete = complete
        self.model: str | None = None
        self.usage: Any = None
        self.finished = self.truncated = False

    def read(self, chunk: Any) -> Iterator[str]:
        self.model = chunk.model or self.model
        self.usage = chunk.usage or self.usage
        for choice in chunk.choices:
            self.truncated = self.truncated or choice.finish_reason == "length"
            self.finished = self.finished or bool(choice.finish_reason)
            if choice.delta and choice.delta.content:
                yield choice.delta.content

    def completion(self, text: str, started: float) -> Completion:
        if not self.finished:
            raise IncompleteStream("the stream ended before the model finished")
        completion = self._complete(text, self.model, self.usage, started)
        return replace(completion, truncated=self.truncated)
