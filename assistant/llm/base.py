"""What every provider shares: the `Provider` protocol, `Completion` and `CallRecord`, the
errors, retries with backoff, and the deadline that bounds a whole call (LLM_DEADLINE)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

log = logging.getLogger(__name__)


Message = dict[str, str]


T = TypeVar("T")


PROVIDERS = ("auto", "openai", "ollama", "local", "extractive")


# Served on the user's own hardware: no bill, whatever the model is called.
FREE_PROVIDERS = frozenset({"ollama", "local", "extractive"})


RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


MAX_BACKOFF = 20.0


TEMPERATURE = 0.2


# Chat templates wrap each message in a few special tokens; estimates add them per message.
MESSAGE_OVERHEAD_TOKENS = 4


# What a server that cannot read a reply, or reads one of the wrong shape, raises.
MALFORMED = (ValueError, TypeError, AttributeError, LookupError)


class ProviderError(RuntimeError):
    """The provider could not produce a completion; the caller falls back to extractive."""


class IncompleteStream(ProviderError):
    """The stream ended (or the connection closed) before the model said it had finished:
    what arrived is a fragment, never an answer."""


class DeadlineExceeded(httpx.TimeoutException):
    """The call's total time budget (LLM_DEADLINE) ran out."""


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


def start_deadline(seconds: float | None) -> Deadline | None:
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


def finish(
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
