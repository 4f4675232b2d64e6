"""assistant.client against a served API (`python -m assistant serve`), and the Makefile's curl
recipes."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from assistant.client import ApiError, AssistantClient, default_url
from assistant.config import PROJECT_ROOT
from tests.conftest import free_port, running_api


@pytest.fixture(scope="module")
def api(embedded_server, tmp_path_factory):
    with running_api(embedded_server.get_uri(), tmp_path_factory.mktemp("api")) as served:
        yield served


@pytest.fixture
def client(api):
    with AssistantClient(api.url) as client:
        yield client


def _feedback(database_url: str, conversation_id: str):
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT feedback, comment FROM feedback WHERE conversation_id = %s", (conversation_id,)
        ).fetchone()
    return row


def test_question_and_feedback_round_trip(client, api):
    body = client.question("how do I cancel my subscription?")
    assert body["intent"] == "cancel-subscription" and body["status"] == "answered"
    assert body["sources"] and "{{" not in body["answer"]
    follow_up = client.question("and can I get a refund?", session_id=body["session_id"])
    assert follow_up["session_id"] == body["session_id"]
    saved = client.feedback(body["conversation_id"], -1, comment="too long")
    assert saved == {"conversation_id": body["conversation_id"], "feedback": -1, "status": "saved"}
    assert _feedback(api.database_url, body["conversation_id"]) == (-1, "too long")


def test_api_errors_carry_status_and_code(client):
    with pytest.raises(ApiError) as blank:
        client.question("   ")
    assert (blank.value.status, blank.value.code) == (400, "invalid_request")
    with pytest.raises(ApiError) as unknown:
        client.feedback("no-such-conversation", 1)
    assert (unknown.value.status, unknown.value.code) == (404, "conversation_not_found")
    with pytest.raises(ApiError) as vote:
        client.feedback("anything", 2)
    assert vote.value.status == 400 and "feedback" in vote.value.message


def test_health_and_stats(client):
    health = client.health()
    assert health["provider"] == "extractive" and health["knowledge_base"]["documents"] == 70
    client.question("what payment methods do you accept?")
    # A "+03:00" must survive the query string: unencoded, "+" would read as a space.
    stats = client.stats(datetime.now(timezone(timedelta(hours=3))) - timedelta(minutes=5))
    assert stats["conversations"] >= 1
    assert {row["intent"] for row in stats["top_intents"]} >= {"payment-methods"}
    assert client.stats(datetime.now(UTC) + timedelta(hours=1))["conversations"] == 0


def test_no_api_and_a_silent_api_are_clear_errors():
    with AssistantClient(f"http://127.0.0.1:{free_port()}") as nobody, pytest.raises(ApiError) as e:
        nobody.health()
    assert e.value.code == "unreachable" and e.value.status is None and "no API at" in str(e.value)
    with socket.socket() as silent:
        # Accepts connections (the backlog does) but never answers.
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with AssistantClient(url, read_timeout=0.5) as slow, pytest.raises(ApiError) as e:
            slow.question("hello?")
    assert e.value.code == "timeout"


def test_default_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ASSISTANT_URL", "http://api.internal:8080")
    assert default_url() == "http://api.internal:8080"
    assert AssistantClient().url == "http://api.internal:8080"
    monkeypatch.delenv("ASSISTANT_URL")
    assert AssistantClient().url == "http://localhost:5000"


def test_stream_endpoint_of_the_served_api(client, api):
    events = list(client.stream("I forgot my password"))
    assert [kind for kind, _ in events[-2:]] == ["delta", "answer"]
    assert {kind for kind, _ in events[:-1]} == {"delta"}
    body = events[-1][1]
    assert body["intent"] == "reset-password" and "".join(t for _, t in events[:-1]).strip()
    with psycopg.connect(api.database_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM conversations WHERE id = %s", (body["conversation_id"],)
        ).fetchone() == (1,)


@pytest.mark.parametrize(
    "question, status",
    [("I want to talk to a real person", "handoff"), ("what's the weather in Paris?",
     "out_of_scope"), ("hello", "small_talk")],
)  # fmt: skip
def test_a_decided_reply_streams_its_text_too(client, api, question, status):
    """A UI that shows deltas shows the handoff, the decline and the greeting too."""
    events = list(client.stream(question))
    assert [kind for kind, _ in events] == ["delta", "answer"]
    body = events[-1][1]
    assert body["status"] == status and events[0][1] == body["answer"] and body["answer"]
    assert body["handoff_reason"] == ("requested_human" if status == "handoff" else None)


class _Api(BaseHTTPRequestHandler):
    """A minimal API that answers each path with a canned (status, content type, body), so the
    client's event-stream parsing and its fallback can be pinned down byte by byte."""

    routes: dict[str, tuple[int, str, bytes]] = {}
    hits: list[str]

    def do_POST(self):
        self.hits.append(self.path)
        status, content_type, body = self.routes[self.path]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def _canned_api(routes: dict[str, tuple[int, str, bytes]]) -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), type("Handler", (_Api,), {"routes": routes, "hits": hits})
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def _sse(wire: str) -> dict[str, tuple[int, str, bytes]]:
    return {"/question/stream": (200, "text/event-stream", wire.encode())}


def test_stream_parses_the_event_stream_contract():
    answer = {"conversation_id": "c1", "session_id": "s1", "answer": "Überall: 字幕 ✓"}
    wire = (
        ": a comment line is ignored\r\n"
        'event: delta\r\ndata: {"text": "Überall: "}\r\n\r\n'
        'event: delta\ndata: {"text": "字幕 ✓"}\n\n'
        f"event: answer\ndata: {json.dumps(answer, ensure_ascii=False)}\n\n"
    )
    with _canned_api(_sse(wire)) as (url, _), AssistantClient(url) as client:
        assert list(client.stream("q")) == [
            ("delta", "Überall: "),
            ("delta", "字幕 ✓"),
            ("answer", answer),
        ]
    error = {"error": {"code": "provider_failed", "message": "the model went away"}}
    wire = f'event: delta\ndata: {{"text": "Hal"}}\n\nevent: error\ndata: {json.dumps(error)}\n\n'
    with _canned_api(_sse(wire)) as (url, _), AssistantClient(url) as client:
        events = client.stream("q")
        assert next(events) == ("delta", "Hal")
        with pytest.raises(ApiError) as failed:
            next(events)
    assert (failed.value.code, failed.value.message) == ("provider_failed", "the model went away")
    cut_off = _sse('event: delta\ndata: {"text": "cut off"}\n\n')
    with (
        _canned_api(cut_off) as (url, _),
        AssistantClient(url) as client,
        pytest.raises(ApiError, match="without an answer"),
    ):
        list(client.stream("q"))


def test_stream_falls_back_to_question_once_it_knows_there_is_no_stream():
    body = {"conversation_id": "c1", "session_id": "s1", "answer": "Whole answer."}
    not_found = {"error": {"code": "not_found", "message": "The requested URL was not found"}}
    routes = {
        "/question/stream": (404, "application/json", json.dumps(not_found).encode()),
        "/question": (200, "application/json", json.dumps(body).encode()),
    }
    with _canned_api(routes) as (url, hits), AssistantClient(url) as client:
        for _ in range(2):
            assert list(client.stream("q")) == [("delta", "Whole answer."), ("answer", body)]
    assert hits == ["/question/stream", "/question", "/question"]


@pytest.fixture(scope="module")
def make():
    if not shutil.which("make") or not shutil.which("curl"):
        pytest.skip("make and curl are needed for the Makefile's curl recipes")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "-s", "--no-print-directory", *args],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_make_curl_recipes(make, api):
    asked = make("api-question", f"URL={api.url}", 'Q=my card was charged "twice"')
    assert asked.returncode == 0, asked.stderr
    body = json.loads(asked.stdout)
    assert body["question"] == 'my card was charged "twice"'
    assert body["intent"] == "double-charge"
    voted = make("api-feedback", f"URL={api.url}", f"ID={body['conversation_id']}", "FEEDBACK=-1")
    assert voted.returncode == 0, voted.stderr
    assert json.loads(voted.stdout)["status"] == "saved"
    assert _feedback(api.database_url, body["conversation_id"]) == (-1, None)
    health = make("api-health", f"URL={api.url}")
    assert health.returncode == 0 and json.loads(health.stdout)["database"] == "ok"
    missing = make("api-feedback", f"URL={api.url}")
    assert missing.returncode != 0 and "ID=" in missing.stdout + missing.stderr
    listed = make("help").stdout
    for target in ("api-question", "api-feedback", "api-health", "streamlit", "gradio"):
        assert target in listed


def test_make_api_feedback_refuses_a_word_without_sending_it(make, api):
    worded = make("api-feedback", f"URL={api.url}", "ID=c1", "FEEDBACK=up")
    assert worded.returncode != 0
    assert "FEEDBACK must be 1 (thumbs up) or -1 (thumbs down), not 'up'\n" in worded.stderr
    assert "Traceback" not in worded.stderr
    assert worded.stdout == ""  # no request went out, so no reply was printed
