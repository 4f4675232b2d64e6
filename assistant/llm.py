"""Answer providers behind one small protocol: `complete(messages) -> Completion`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx
import openai

from assistant.config import Settings

Message = dict[str, str]


class ProviderError(RuntimeError):
    """The provider could not produce a completion; the caller falls back to extractive."""


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency: float


class Provider(Protocol):
    name: str
    model: str

    def complete(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Completion: ...


class ExtractiveProvider:
    """No model: the best knowledge-base answer, verbatim. Always available, never wrong about
    what the KB says."""

    name = "extractive"
    model = "extractive"

    def complete(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Completion:
        started = time.perf_counter()
        if not references:
            raise ProviderError("extractive provider needs at least one reference")
        return Completion(references[0], self.model, 0, 0, time.perf_counter() - started)


class OpenAICompatibleProvider:
    """OpenAI, or any server that speaks its chat API: Ollama's /v1, llama.cpp, vLLM."""

    name = "openai"

    def __init__(self, settings: Settings):
        self.model = settings.openai_model
        self._client = openai.OpenAI(
            # Local OpenAI-compatible servers ignore the key but the SDK insists on one.
            api_key=settings.openai_api_key or "not-needed",
            base_url=settings.openai_base_url,
            timeout=httpx.Timeout(settings.llm_read_timeout, connect=settings.llm_connect_timeout),
            max_retries=settings.llm_max_retries,
        )

    def complete(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Completion:
        started = time.perf_counter()
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=list(messages), temperature=0.2, max_tokens=400
            )
        except openai.OpenAIError as exc:
            raise ProviderError(f"{type(exc).__name__}") from exc
        text = (response.choices[0].message.content or "").strip() if response.choices else ""
        if not text:
            raise ProviderError("empty completion")
        usage = response.usage
        return Completion(
            text=text,
            model=response.model or self.model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency=time.perf_counter() - started,
        )


def make_provider(settings: Settings) -> Provider:
    """`auto`: OpenAI when a key is set, else extractive. A keyless OpenAI-compatible server
    (llama.cpp, vLLM, Ollama's /v1) is chosen with LLM_PROVIDER=openai and OPENAI_BASE_URL."""
    choice = settings.llm_provider
    if choice == "auto":
        choice = "openai" if settings.openai_api_key else "extractive"
    if choice == "openai":
        return OpenAICompatibleProvider(settings)
    if choice == "extractive":
        return ExtractiveProvider()
    raise ValueError(
        f"unknown LLM_PROVIDER {settings.llm_provider!r}: use auto, openai or extractive"
    )
