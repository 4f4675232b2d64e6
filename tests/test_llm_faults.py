"""An LLM server that hangs or returns 500 gives the extractive fallback within the configured
timeout, at the API level: POST /question and /question/stream through the Flask app, with
LLM_PROVIDER=openai pointed at the server, and the row read back from PostgreSQL.

test_providers.py covers the provider on its own (a llama.cpp server killed mid-answer, Ollama
answering 5xx); here the whole request is timed and the stored row checked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import requests

from assistant.app import create_app
from assistant.config import Settings
from assistant.llm import make_provider
from assistant.rag import Assistant
from tests.conftest import serving, sse_events
from tests.test_providers import _model_file, _start_llama_server, model_dir  # noqa: F401

CANCEL = "how do I cancel my subscription?"
READ_TIMEOUT = 2.0
RETRIES = 2
BACKOFF = 0.2
# Generous: this checks that the timeout bounds the wait, it is not a speed benchmark.
MARGIN = 5.0
LIMIT = READ_TIMEOUT * (RETRIES + 1) + MARGIN


def _settings(base_url: str, tmp_path) -> Settings:
    return replace(
        Settings.from_env(
            {
                "LLM_PROVIDER": "openai",
                "OPENAI_BASE_URL": base_url,
                "OPENAI_MODEL": "smollm2",
                "LLM_CONNECT_TIMEOUT": str(READ_TIMEOUT),
                "LLM_READ_TIMEOUT": str(READ_TIMEOUT),
                "LLM_MAX_RETRIES": str(RETRIES),
                "LLM_RETRY_BACKOFF": str(BACKOFF),
                "LLM_MAX_TOKENS": "20",
                # The judge must not call the broken server too.
                "JUDGE_PROVIDER": "heuristic",
                "RATE_LIMIT": "",
            }
        ),
        data_dir=tmp_path,
    )


@contextmanager
def _client(base_url: str, assistant, database, tmp_path) -> Iterator:
    settings = _settings(base_url, tmp_path)
    live = Assistant(assistant.retriever, make_provider(settings), assistant.profile)
    app = create_app(
        replace(settings, database_url=database.url), assistant=live, database=database
    )
    try:
        yield app.test_client()
    finally:
        app.extensions["flusher"].stop()


def _stored(database, conversation_id: str) -> dict:
    with psycopg.connect(database.url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT question, answer, provider, model_used, fallback, error, status"
            " FROM conversations WHERE id = %s",
            (conversation_id,),
        ).fetchone()


def _ask(client, stream: bool) -> tuple[dict, str, float]:
    """The answer body, the text its deltas spelled (streamed), and the seconds it took."""
    started = time.monotonic()
    response = client.post("/question/stream" if stream else "/question", json={"question": CANCEL})
    raw = response.get_data(as_text=True)  # a stream runs while it is read
    elapsed = time.monotonic() - started
    assert response.status_code == 200, raw
    if not stream:
        return response.get_json(), "", elapsed
    events = sse_events(raw)
    kind, body = events[-1]
    assert kind == "answer", events
    assert [k for k, _ in events[:-1]] == ["delta"] * (len(events) - 1), events
    return body, "".join(data["text"] for _, data in events[:-1]), elapsed


def _assert_fallback(body: dict, streamed: str, stream: bool, expected: str, database, error):
    assert body["fallback"] is True and body["status"] == "answered"
    assert body["provider"] == "extractive" and body["model_used"] == "extractive"
    assert body["intent"] == "cancel-subscription"
    # The knowledge base's best answer, its placeholders filled, in the deltas as well.
    assert body["answer"] == expected and "{{" not in expected
    if stream:
        assert streamed == expected
    row = _stored(database, body["conversation_id"])
    assert row["fallback"] is True and row["error"] == error
    assert row["provider"] == "extractive" and row["answer"] == expected


# --- Hanging: the real llama.cpp server, frozen --------------------------------------------


@pytest.fixture(scope="module")
def llama_process(model_dir):  # noqa: F811
    """A llama.cpp server of this module's own, since the tests freeze it."""
    process, base = _start_llama_server(_model_file(model_dir), "smollm2")
    yield process, base
    os.kill(process.pid, signal.SIGCONT)
    process.kill()
    process.wait(timeout=20)


@contextmanager
def _frozen(process) -> Iterator[None]:
    """SIGSTOP: the process keeps its socket, the kernel keeps accepting connections into the
    backlog, and nothing ever answers, as a server stuck in a long generation or a GC pause."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


@pytest.mark.parametrize("stream", [False, True], ids=["question", "stream"])
def test_frozen_llama_server_gives_the_extractive_answer_in_time(
    llama_process, assistant, database, tmp_path, stream
):
    process, base = llama_process
    expected = assistant.answer(CANCEL).answer
    with _client(base, assistant, database, tmp_path) as client:
        # Alive before and after: the fallback is the freeze's doing. (Not an answer from the
        # model: a fresh prompt can take longer than this test's short read timeout.)
        assert requests.get(f"{base}/models", timeout=10).status_code == 200
        with _frozen(process):
            body, streamed, elapsed = _ask(client, stream)
        assert requests.get(f"{base}/models", timeout=10).status_code == 200
    _assert_fallback(body, streamed, stream, expected, database, "APITimeoutError")
    # It waited for the read timeout (a hang, not a refusal), and no longer than its bound.
    assert READ_TIMEOUT - 0.1 <= elapsed < LIMIT, elapsed


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A socket that accepts (the kernel completes the handshake) and never replies."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.mark.parametrize("stream", [False, True], ids=["question", "stream"])
def test_silent_socket_gives_the_extractive_answer_in_time(
    silent_server, assistant, database, tmp_path, stream
):
    expected = assistant.answer(CANCEL).answer
    with _client(silent_server, assistant, database, tmp_path) as client:
        body, streamed, elapsed = _ask(client, stream)
    _assert_fallback(body, streamed, stream, expected, database, "APITimeoutError")
    assert READ_TIMEOUT - 0.1 <= elapsed < LIMIT, elapsed


# --- HTTP 500 --------------------------------------------------------------------------------


class FailingServer(ThreadingHTTPServer):
    """Answers every request with HTTP 500 and an OpenAI-style error body, and counts them.

    A stand-in because no real model server returns 500 on demand: llama.cpp's answers 500
    only on internal faults we cannot trigger from outside.
    """

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _FailingHandler)
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _FailingHandler(BaseHTTPRequestHandler):
    server: FailingServer

    def log_message(self, *args) -> None:
        """Quiet."""

    def _fail(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.requests.append(f"{self.command} {self.path}")
        body = json.dumps(
            {"error": {"message": "internal error", "type": "server_error", "code": 500}}
        ).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _fail


@pytest.fixture
def failing_server() -> Iterator[FailingServer]:
    server = FailingServer()
    with serving(server):
        yield server


@pytest.mark.parametrize("stream", [False, True], ids=["question", "stream"])
def test_http_500_gives_the_extractive_answer_after_the_retries(
    failing_server, assistant, database, tmp_path, stream
):
    expected = assistant.answer(CANCEL).answer
    with _client(failing_server.url, assistant, database, tmp_path) as client:
        body, streamed, elapsed = _ask(client, stream)
    _assert_fallback(body, streamed, stream, expected, database, "InternalServerError")
    # 500 is retried: the first call and RETRIES more, with backoff, then the fallback.
    assert failing_server.requests == ["POST /v1/chat/completions"] * (RETRIES + 1)
    backoff = sum(BACKOFF * 2**attempt for attempt in range(RETRIES))
    assert backoff <= elapsed < backoff + MARGIN, elapsed
