"""Generated answers that can be trusted, at the API level: POST /question and
/question/stream through the Flask app, LLM_PROVIDER=openai pointed at a model server, and
every row read back from a PostgreSQL database of the test's own, so `count(*)` is exact.

The server is an OpenAI-compatible stand-in (`StandIn`) wherever the fault must be made on
purpose: no real model server ends a stream early, trickles bytes, answers 429 on demand,
sends malformed JSON, refuses gpt-5's parameters with OpenAI's error bodies, or writes a given
judge reply. The reformatted echo is the stand-in repeating the system prompt it was sent,
numbered or spaced out, as a prompt injection made a model do. The real llama.cpp server
answers where it can show the case (citations, and the judge's structured output, in
test_judge.py and test_providers.py).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import requests
from psycopg.rows import dict_row
from werkzeug.serving import make_server

from assistant.app import create_app
from assistant.config import Settings
from assistant.db import Database
from assistant.judge import UNJUDGED
from assistant.llm import make_provider
from assistant.rag import Assistant
from tests.conftest import free_port, serving, sse_events

CANCEL = "how do I cancel my subscription?"
FRAGMENT = "To cancel, open Account settings and"
DEADLINE = 3.0
# Generous: these check that a bound holds, they are not speed benchmarks.
MARGIN = 3.0


# --- The stand-in server ------------------------------------------------------------------


Behaviour = Callable[["_Handler", dict], None]


class StandIn(ThreadingHTTPServer):
    """An OpenAI-compatible chat server that does what the test scripts (`behaviour`), and
    keeps every request body it was sent."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour: Behaviour = answer("Open Account settings and choose Cancel plan [1].")
        self.requests: list[dict] = []
        self.gone_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.requests.append(body)
        self.server.behaviour(self, body)

    def send_json(self, status: int, body: object, headers: dict[str, str] | None = None):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)
        self.wfile.flush()

    def start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def cut(self) -> None:
        """Drop the connection mid-body, as a crashed server or a broken network does."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def _completion(text: object, model: str = "stand-in") -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132},
    }


def _event(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": text} if text is not None else {}
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stand-in",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def answer(text: str) -> Behaviour:
    """A well-behaved model that says `text`, streamed in words when asked to stream."""

    def behave(handler: _Handler, body: dict) -> None:
        if not body.get("stream"):
            handler.send_json(200, _completion(text, body["model"]))
            return
        handler.start_events()
        for word in text.split(" "):
            handler.chunk(_event(word + " "))
        handler.chunk(_event(finish="stop"))
        handler.chunk(b"data: [DONE]\n\n")
        handler.end_chunks()

    return behave


def system_prompt(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "system")


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    with serving(server):
        yield server


def _settings(base_url: str, tmp_path, **env: str) -> Settings:
    return replace(
        Settings.from_env(
            {
                "LLM_PROVIDER": "openai",
                "OPENAI_BASE_URL": base_url,
                "OPENAI_MODEL": "stand-in",
                "LLM_CONNECT_TIMEOUT": "2",
                "LLM_READ_TIMEOUT": "2",
                "LLM_MAX_RETRIES": "2",
                "LLM_RETRY_BACKOFF": "0.1",
                "LLM_DEADLINE": str(DEADLINE),
                "JUDGE_PROVIDER": "heuristic",
                "RATE_LIMIT": "",
                # Judge jobs run when a test runs them, so the stand-in's requests are counted.
                "JOB_WORKER_THREADS": "0",
                **env,
            }
        ),
        data_dir=tmp_path,
    )


@contextmanager
def _app(stand_in: StandIn, assistant, database: Database, tmp_path, **env: str):
    settings = _settings(stand_in.url, tmp_path, **env)
    live = Assistant(assistant.retriever, make_provider(settings), assistant.profile)
    app = create_app(
        replace(settings, database_url=database.url), assistant=live, database=database
    )
    try:
        yield app
    finally:
        app.extensions["flusher"].stop()


def _rows(database: Database) -> list[dict]:
    with psycopg.connect(database.url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM conversations ORDER BY timestamp").fetchall()


def _ask(client, stream: bool, question: str = CANCEL) -> tuple[dict, list, float]:
    """The final body (the `answer` or `error` event's data when streamed), the events, and
    the seconds it took."""
    started = time.monotonic()
    response = client.post(
        "/question/stream" if stream else "/question", json={"question": question}
    )
    raw = response.get_data(as_text=True)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, raw
    if not stream:
        return response.get_json(), [], elapsed
    events = sse_events(raw)
    return events[-1][1], events, elapsed


def _assert_fell_back(
    body: dict, expected: str, database: Database, error: str | tuple[str, ...]
) -> dict:
    """The extractive answer was given, and its one row says which error caused it."""
    assert body["fallback"] is True and body["provider"] == "extractive", body
    assert body["answer"] == expected
    [row] = _rows(database)
    assert row["id"] == body["conversation_id"]
    errors = error if isinstance(error, tuple) else (error,)
    assert row["fallback"] is True and row["error"] in errors, row
    assert row["answer"] == expected and row["status"] == "answered"
    return row


# --- 1. A complete stream, or a recorded failure --------------------------------------------


def _early_end(handler: _Handler, body: dict) -> None:
    """One delta, then a clean end of the body: no finish_reason and no [DONE]."""
    handler.start_events()
    handler.chunk(_event(FRAGMENT))
    handler.end_chunks()


def _cut_after_one_delta(handler: _Handler, body: dict) -> None:
    handler.start_events()
    handler.chunk(_event(FRAGMENT + " "))
    time.sleep(0.2)
    handler.cut()


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (_early_end, "IncompleteStream"),
        # The SDK reports the broken body as httpx's error or as its own connection error.
        (_cut_after_one_delta, ("RemoteProtocolError", "APIConnectionError")),
    ],
    ids=["ended-early", "cut-after-one-delta"],
)
def test_a_stream_that_stops_early_is_never_stored_as_an_answer(
    stand_in, assistant, own_database, tmp_path, behaviour, error
):
    expected = assistant.answer(CANCEL).answer
    stand_in.behaviour = behaviour
    with _app(stand_in, assistant, own_database, tmp_path) as app:
        body, events, _ = _ask(app.test_client(), stream=True)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "answer", events
    # What was sent of the fragment is withdrawn before the extractive answer takes over.
    if "reset" in kinds:
        assert kinds.index("reset") < len(kinds) - 1
        after = kinds[kinds.index("reset") + 1 : -1]
        assert after == ["delta"] and events[kinds.index("reset") + 1][1]["text"] == expected
    row = _assert_fell_back(body, expected, own_database, error)
    assert FRAGMENT not in row["answer"]
    assert len(stand_in.requests) == 1 and len(_rows(own_database)) == 1


def test_a_disconnect_closes_the_upstream_request_within_a_second(
    stand_in, assistant, own_database, tmp_path
):
    def slow_stream(handler: _Handler, body: dict) -> None:
        handler.start_events()
        try:
            for _ in range(600):
                handler.chunk(_event("Open the account page and choose the plan section. "))
                time.sleep(0.1)
        except OSError:
            stand_in.gone_at = time.monotonic()

    stand_in.behaviour = slow_stream
    with _app(stand_in, assistant, own_database, tmp_path, LLM_DEADLINE="120") as app:
        server = make_server("127.0.0.1", free_port(), app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/question/stream"
            response = requests.post(url, json={"question": CANCEL}, stream=True, timeout=30)
            lines = response.iter_lines(decode_unicode=True)
            assert next(line for line in lines if line.startswith("event: delta"))
            left_at = time.monotonic()
            response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
            response.close()
            waited = time.monotonic()
            while stand_in.gone_at is None and time.monotonic() - waited < 10:
                time.sleep(0.05)
        finally:
            server.shutdown()
    assert stand_in.gone_at is not None, "the upstream request was still open after 10 s"
    assert stand_in.gone_at - left_at < 1.0, stand_in.gone_at - left_at
    # The request reached the model: its row says the customer left, with no answer.
    deadline = time.monotonic() + 5
    while not _rows(own_database) and time.monotonic() < deadline:
        time.sleep(0.05)
    [row] = _rows(own_database)
    assert row["status"] == "abandoned" and row["error"] == "ClientDisconnected"
    assert row["answer"] == "" and len(stand_in.requests) == 1


def test_a_failing_spool_during_an_outage_ends_the_stream_with_an_error(
    stand_in, assistant, own_database, tmp_path
):
    """A fault made on purpose: the database is unreachable and the spool folder cannot be
    created (its path is a file), as on a full or read-only disk."""
    (tmp_path / "spool").write_text("not a folder")
    settings = _settings(stand_in.url, tmp_path)
    live = Assistant(assistant.retriever, make_provider(settings), assistant.profile)
    app = _app_on_a_database_that_is_down(settings, live, own_database)
    try:
        client = app.test_client()
        body, events, _ = _ask(client, stream=True)
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "error" and "delta" in kinds, events
        assert body["error"]["code"] == "storage_unavailable"
        response = client.post("/question", json={"question": CANCEL})
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "storage_unavailable"
        health = client.get("/health").get_json()
        assert health["spool_status"] == "failing" and health["status"] == "degraded"
    finally:
        app.extensions["flusher"].stop()
    # Two requests reached the model and neither could be kept anywhere: said, not hidden.
    assert len(stand_in.requests) == 2 and _rows(own_database) == []


def _app_on_a_database_that_is_down(settings: Settings, live: Assistant, database: Database):
    """The app on a PostgreSQL address where nothing listens (it starts anyway, see
    tests/test_outage.py)."""
    down = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/gone", database.migrations_dir)
    return create_app(replace(settings, database_url=down.url), assistant=live, database=down)


# --- 2. A deadline ---------------------------------------------------------------------------


def _trickle(handler: _Handler, body: dict) -> None:
    """A whole answer, one byte every 0.5 s: no single read ever waits for the read timeout."""
    if body.get("stream"):
        handler.start_events()
        raw = _event("Open Account settings and choose Cancel plan. ")
        for i in range(len(raw)):
            handler.chunk(raw[i : i + 1])
            time.sleep(0.5)
        return
    raw = json.dumps(_completion("Open Account settings.")).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    for i in range(len(raw)):
        handler.wfile.write(raw[i : i + 1])
        handler.wfile.flush()
        time.sleep(0.5)


def _rate_limited(retry_after: str) -> Behaviour:
    def behave(handler: _Handler, body: dict) -> None:
        handler.send_json(
            429,
            {
                "error": {
                    "message": "Rate limit reached for gpt-4o-mini on requests per min (RPM).",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
            {"Retry-After": retry_after},
        )

    return behave


@pytest.mark.parametrize("stream", [False, True], ids=["question", "stream"])
@pytest.mark.parametrize(
    ("behaviour", "error", "retries"),
    [
        (_trickle, None, "2"),
        (_rate_limited("20"), "RateLimitError", "2"),
        (_rate_limited("0.4"), "RateLimitError", "50"),
    ],
    ids=["trickle", "429-retry-after-20", "429-storm"],
)
def test_the_deadline_holds_whatever_the_server_does(
    stand_in, assistant, own_database, tmp_path, stream, behaviour, error, retries
):
    expected = assistant.answer(CANCEL).answer
    stand_in.behaviour = behaviour
    with _app(stand_in, assistant, own_database, tmp_path, LLM_MAX_RETRIES=retries) as app:
        body, _, elapsed = _ask(app.test_client(), stream)
    assert elapsed < DEADLINE + MARGIN, elapsed
    timeouts = ("APITimeoutError", "DeadlineExceeded")
    row = _assert_fell_back(body, expected, own_database, _rows(own_database)[0]["error"])
    assert row["error"] == error if error else row["error"] in timeouts, row["error"]
    if retries == "50":
        # Retried while the deadline allowed (Retry-After 0.4 s), never past it.
        assert 3 <= len(stand_in.requests) <= DEADLINE / 0.4 + 1


# --- 3. No 5xx from a model, whatever it sends ------------------------------------------------


def _sends(raw: bytes, content_type: str = "application/json") -> Behaviour:
    def behave(handler: _Handler, body: dict) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)
        handler.wfile.flush()

    return behave


def _error_mid_stream(handler: _Handler, body: dict) -> None:
    handler.start_events()
    handler.chunk(_event("Open Account "))
    error = {"error": {"message": "model crashed", "type": "server_error", "code": None}}
    handler.chunk(f"data: {json.dumps(error)}\n\n".encode())
    handler.end_chunks()


MALFORMED = {
    "malformed-json": _sends(b'{"choices": [{"message": {"content": "Open Acc'),
    "empty-body": _sends(b""),
    "wrong-types": _sends(json.dumps({"choices": "none", "model": 7, "usage": "x"}).encode()),
    "content-not-text": _sends(json.dumps(_completion({"steps": [1, 2]})).encode()),
    "html": _sends(b"<html>502 Bad Gateway</html>", "text/html"),
    "error-mid-stream": _error_mid_stream,
}


@pytest.mark.parametrize("stream", [False, True], ids=["question", "stream"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_whatever_the_model_sends_the_customer_gets_an_answer(
    stand_in, assistant, own_database, tmp_path, stream, case
):
    expected = assistant.answer(CANCEL).answer
    stand_in.behaviour = MALFORMED[case]
    with _app(stand_in, assistant, own_database, tmp_path) as app:
        body, events, _ = _ask(app.test_client(), stream)
    if stream:
        assert events[-1][0] == "answer", events
    row = _assert_fell_back(body, expected, own_database, _rows(own_database)[0]["error"])
    assert row["error"], row
    assert len(_rows(own_database)) == 1


# --- 4. Current OpenAI models -----------------------------------------------------------------


def _openai_rules(handler: _Handler, body: dict) -> None:
    """OpenAI's published refusals for reasoning models (gpt-5, o-series), word for word."""
    reasoning = body["model"].startswith(("gpt-5", "o1", "o3", "o4"))
    if reasoning and "max_tokens" in body:
        handler.send_json(
            400,
            {
                "error": {
                    "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                    "model. Use 'max_completion_tokens' instead.",
                    "type": "invalid_request_error",
                    "param": "max_tokens",
                    "code": "unsupported_parameter",
                }
            },
        )
    elif (reasoning or body["model"] == "picky") and body.get("temperature", 1) != 1:
        handler.send_json(
            400,
            {
                "error": {
                    "message": "Unsupported value: 'temperature' does not support 0.2 with "
                    "this model. Only the default (1) value is supported.",
                    "type": "invalid_request_error",
                    "param": "temperature",
                    "code": "unsupported_value",
                }
            },
        )
    else:
        answer("Open Account settings and choose Cancel plan [1].")(handler, body)


@pytest.mark.parametrize("model", ["gpt-5-mini", "o4-mini", "o3"])
def test_reasoning_models_get_the_parameters_they_accept(
    stand_in, assistant, own_database, tmp_path, model
):
    stand_in.behaviour = _openai_rules
    with _app(stand_in, assistant, own_database, tmp_path, OPENAI_MODEL=model) as app:
        client = app.test_client()
        body, _, _ = _ask(client, stream=False)
        streamed, _, _ = _ask(client, stream=True)
        health = client.get("/health").get_json()
    for reply in (body, streamed):
        assert reply["fallback"] is False and reply["provider"] == "openai", reply
    for sent in stand_in.requests:
        assert sent["max_completion_tokens"] > 0 and "max_tokens" not in sent
        assert "temperature" not in sent
    assert len(stand_in.requests) == 2 and len(_rows(own_database)) == 2
    assert health["provider_status"] == "ok"


def test_a_refused_parameter_is_retried_once_without_it_and_then_left_out(
    stand_in, assistant, own_database, tmp_path
):
    stand_in.behaviour = _openai_rules
    with _app(stand_in, assistant, own_database, tmp_path, OPENAI_MODEL="picky") as app:
        client = app.test_client()
        first, _, _ = _ask(client, stream=False)
        second, _, _ = _ask(client, stream=False)
    assert first["fallback"] is False and second["fallback"] is False
    assert [("temperature" in sent) for sent in stand_in.requests] == [True, False, False]
    assert len(_rows(own_database)) == 2


def test_health_says_degraded_while_the_provider_fails(stand_in, assistant, own_database, tmp_path):
    stand_in.behaviour = _rate_limited("20")
    with _app(stand_in, assistant, own_database, tmp_path) as app:
        client = app.test_client()
        assert client.get("/health").get_json()["provider_status"] == "unused"
        _ask(client, stream=False)
        health = client.get("/health").get_json()
        assert health["provider_status"] == "degraded" and health["status"] == "degraded"
        stand_in.behaviour = answer("Open Account settings and choose Cancel plan [1].")
        _ask(client, stream=False)
        assert client.get("/health").get_json()["provider_status"] == "ok"
    assert len(_rows(own_database)) == 2


# --- 5. A judge that reads its verdict ------------------------------------------------------


JUDGE_REPLIES = {
    "mixed-labels": "At first sight NON_RELEVANT, since it skips refunds; on balance RELEVANT.",
    "two-objects": '{"relevance": "NON_RELEVANT"}\n{"relevance": "RELEVANT"}',
    "prose-only": "The answer gives the cancellation steps the customer asked for.",
}


@pytest.mark.parametrize("case", sorted(JUDGE_REPLIES))
def test_a_judge_reply_that_cannot_be_read_is_stored_unjudged(
    stand_in, assistant, own_database, tmp_path, case
):
    stand_in.behaviour = answer(JUDGE_REPLIES[case])
    with _app(
        stand_in, assistant, own_database, tmp_path, LLM_PROVIDER="extractive",
        JUDGE_PROVIDER="openai",
    ) as app:  # fmt: skip
        body, _, _ = _ask(app.test_client(), stream=False)
        assert app.extensions["jobs"].run_until_idle(30) == 1
    [row] = _rows(own_database)
    assert row["id"] == body["conversation_id"] and row["relevance"] == UNJUDGED, row
    assert row["relevance_explanation"].startswith("the judge's reply could not be read")
    assert row["eval_prompt_tokens"] == 120
    # Structured output was asked for, with the verdict's schema.
    [judged] = stand_in.requests
    assert judged["response_format"]["schema"]["required"] == ["relevance", "explanation"]


def test_a_judge_verdict_is_taken_from_its_field(stand_in, assistant, own_database, tmp_path):
    stand_in.behaviour = answer('{"relevance": "PARTLY_RELEVANT", "explanation": "Vague."}')
    with _app(
        stand_in, assistant, own_database, tmp_path, LLM_PROVIDER="extractive",
        JUDGE_PROVIDER="openai",
    ) as app:  # fmt: skip
        _ask(app.test_client(), stream=False)
        assert app.extensions["jobs"].run_until_idle(30) == 1
    [row] = _rows(own_database)
    assert row["relevance"] == "PARTLY_RELEVANT" and row["relevance_explanation"] == "Vague."
    assert row["relevance_source"] == "llm"


# --- 6. Grounded, cited answers --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["question", "stream"])
def test_the_row_records_which_entries_the_answer_cited(
    stand_in, assistant, own_database, tmp_path, stream
):
    with _app(stand_in, assistant, own_database, tmp_path) as app:
        client = app.test_client()
        stand_in.behaviour = answer("Open Account settings [1], then choose Cancel plan [2, 9].")
        cited, _, _ = _ask(client, stream)
        stand_in.behaviour = answer("Open Account settings and choose Cancel plan.")
        uncited, _, _ = _ask(client, stream)
    rows = {row["id"]: row for row in _rows(own_database)}
    shown = [source["id"] for source in cited["sources"]]
    row = rows[cited["conversation_id"]]
    # [9] was never shown: it is not a citation.
    assert row["cited_sources"] == shown[:2] and row["uncited"] is False
    row = rows[uncited["conversation_id"]]
    assert row["cited_sources"] == [] and row["uncited"] is True
    assert len(rows) == 2


# --- 7. The echo guard -----------------------------------------------------------------------


REFORMATS = {
    "numbered": lambda text: " ".join(f"{n}. {w}" for n, w in enumerate(text.split(), 1)),
    "spaced-letters": lambda text: " ".join(text.replace(" ", "")),
    "lower-no-punctuation": lambda text: "".join(
        c for c in text.lower() if c.isalnum() or c == " "
    ),
}


@pytest.mark.parametrize("stream", [False, True], ids=["question", "stream"])
@pytest.mark.parametrize("case", sorted(REFORMATS))
def test_a_reformatted_echo_of_the_prompt_never_reaches_the_customer(
    stand_in, assistant, own_database, tmp_path, stream, case
):
    def echo(handler: _Handler, body: dict) -> None:
        answer(REFORMATS[case](system_prompt(body)))(handler, body)

    expected = assistant.answer(CANCEL).answer
    stand_in.behaviour = echo
    with _app(stand_in, assistant, own_database, tmp_path) as app:
        body, events, _ = _ask(app.test_client(), stream)
    _assert_fell_back(body, expected, own_database, "InstructionsEchoed")
    sent = "".join(data["text"] for kind, data in events if kind == "delta")
    letters = "".join(c for c in sent.lower() if c.isalpha())
    prompt = "".join(c for c in system_prompt(stand_in.requests[0]).lower() if c.isalpha())
    assert not any(letters[i : i + 40] in prompt for i in range(max(0, len(letters) - 39)))


# --- A customer in another language ----------------------------------------------------------


GERMAN = "Wie kann ich mein Abonnement kündigen?"
GERMAN_ANSWER = "Melden Sie sich an, öffnen Sie Konto > Abo und wählen Sie Abo kündigen [1]."


def _translates(handler: _Handler, body: dict) -> None:
    """The stand-in as a model that translates when asked to, and answers in the customer's
    language. (The bundled 135M model cannot translate; no larger one runs here.)"""
    if system_prompt(body).startswith("Translate"):
        answer("How can I cancel my subscription?")(handler, body)
    else:
        answer(GERMAN_ANSWER)(handler, body)


@pytest.mark.parametrize("stream", [False, True], ids=["question", "stream"])
def test_another_language_is_answered_in_it_when_a_model_answers(
    stand_in, assistant, own_database, tmp_path, stream
):
    stand_in.behaviour = _translates
    with _app(stand_in, assistant, own_database, tmp_path) as app:
        body, _, _ = _ask(app.test_client(), stream, GERMAN)
    assert body["status"] == "answered" and body["intent"] == "cancel-subscription", body
    assert body["answer"] == GERMAN_ANSWER.strip() and body["provider"] == "openai"
    translate, generate = stand_in.requests
    assert translate["messages"][-1]["content"] == GERMAN
    # The model answers the customer's own words, not the translation.
    assert GERMAN in generate["messages"][-1]["content"]
    [row] = _rows(own_database)
    assert row["cited_sources"] == [body["sources"][0]["id"]]
    # The translation's tokens count too (a stream's usage is estimated: the stand-in sends none).
    assert row["prompt_tokens"] == 2 * 120 if not stream else row["prompt_tokens"] > 120


def test_another_language_is_handed_off_when_translation_fails(
    stand_in, assistant, own_database, tmp_path
):
    stand_in.behaviour = _rate_limited("20")
    with _app(stand_in, assistant, own_database, tmp_path) as app:
        body, _, _ = _ask(app.test_client(), False, GERMAN)
    assert body["status"] == "handoff" and body["answer"].startswith("Entschuldigung")
    assert "\n\nI'm sorry, I can only answer in English" in body["answer"]
    assert len(stand_in.requests) == 1 and len(_rows(own_database)) == 1
