from dataclasses import replace

import pytest

from assistant.config import Settings
from assistant.llm import (
    ExtractiveProvider,
    OpenAICompatibleProvider,
    ProviderError,
    make_provider,
)
from assistant.rag import Assistant
from tests.conftest import free_port


def test_auto_picks_openai_only_with_a_key():
    # Nothing reachable or installed: no Ollama on port 9, no local model file.
    nothing = {"OLLAMA_BASE_URL": "http://127.0.0.1:9", "LOCAL_MODEL_PATH": "/nonexistent.gguf"}
    assert make_provider(Settings.from_env(nothing)).name == "extractive"
    assert make_provider(Settings.from_env({"OPENAI_API_KEY": "sk-x"})).name == "openai"
    assert make_provider(Settings.from_env({"LLM_PROVIDER": "openai"})).name == "openai"
    with pytest.raises(ValueError):
        make_provider(Settings.from_env({"LLM_PROVIDER": "bard"}))


def test_extractive_returns_the_best_reference():
    completion = ExtractiveProvider().complete([], references=["first", "second"])
    assert completion.text == "first" and completion.model == "extractive"
    with pytest.raises(ProviderError):
        ExtractiveProvider().complete([], references=[])


def _unreachable_openai() -> OpenAICompatibleProvider:
    # Nothing listens on this port: a real refused connection, not a mock.
    settings = replace(
        Settings.from_env({}),
        openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
        llm_connect_timeout=1,
        llm_read_timeout=2,
        llm_max_retries=0,
    )
    return OpenAICompatibleProvider(settings)


def test_openai_provider_failure_is_a_provider_error():
    with pytest.raises(ProviderError):
        _unreachable_openai().complete([{"role": "user", "content": "hi"}])


def test_assistant_falls_back_to_extractive_and_fills_placeholders(assistant):
    broken = Assistant(assistant.retriever, _unreachable_openai(), assistant.profile)
    answer = broken.answer("how do I cancel my subscription?")
    assert answer.fallback is True and answer.error == "APIConnectionError"
    assert answer.provider == "extractive" and answer.status == "answered"
    assert answer.intent == "cancel-subscription"
    assert "{{" not in answer.answer and "lumenstream.example" in answer.answer


def test_answer_carries_sources_and_timing(assistant):
    answer = assistant.answer("what devices can I watch on?", session_id="s-1")
    assert answer.session_id == "s-1" and answer.status == "answered"
    assert answer.sources and answer.sources[0].intent == answer.intent == "supported-devices"
    assert answer.response_time > 0
    body = answer.public()
    assert set(body) >= {
        "conversation_id",
        "session_id",
        "question",
        "answer",
        "model_used",
        "provider",
        "intent",
        "category",
        "confidence",
        "sources",
        "response_time",
    }


def test_nothing_retrieved_is_out_of_scope(assistant):
    answer = assistant.answer("zzqx vvkk")
    assert answer.status == "out_of_scope" and answer.sources == []
    assert "{{" not in answer.answer and "support@lumenstream.example" in answer.answer
