import json
from dataclasses import replace
from datetime import datetime, timedelta

import psycopg
import pytest

from assistant.app import create_app
from assistant.db import Database
from tests.conftest import stop_postgres

QUESTION = {"question": "how do I cancel my subscription?"}


def _error(response, status: int, code: str | None = None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    if code:
        assert body["error"]["code"] == code
    return body


def test_question_answers_and_stores_the_row(client, database):
    response = client.post("/question", json={**QUESTION, "session_id": "sess-1"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["intent"] == "cancel-subscription" and body["category"] == "Plans"
    assert "{{" not in body["answer"] and body["session_id"] == "sess-1"
    assert body["provider"] == "extractive" and body["model_used"] == "extractive"
    assert {"id", "question", "intent", "score"} <= set(body["sources"][0])
    stored = database.get_conversation(body["conversation_id"])
    assert stored["answer"] == body["answer"] and stored["intent"] == "cancel-subscription"
    assert stored["session_id"] == "sess-1" and stored["status"] == "answered"


def test_feedback_round_trip(client):
    conversation_id = client.post("/question", json=QUESTION).get_json()["conversation_id"]
    response = client.post("/feedback", json={"conversation_id": conversation_id, "feedback": 1})
    assert response.status_code == 200 and response.get_json()["status"] == "saved"
    response = client.post(
        "/feedback",
        json={"conversation_id": conversation_id, "feedback": -1, "comment": "not what I asked"},
    )
    assert response.status_code == 200
    stored = client.get(f"/conversations/{conversation_id}").get_json()
    assert stored["feedback"] == -1 and stored["feedback_comment"] == "not what I asked"
    assert datetime.fromisoformat(stored["timestamp"]).utcoffset() == timedelta(0)
    # A client sees what it may: no error text, token counts or costs.
    assert not {"error", "prompt_tokens", "cost_usd", "eval_total_tokens"} & set(stored)


def test_feedback_unknown_conversation_is_404(client):
    _error(
        client.post("/feedback", json={"conversation_id": "nope", "feedback": 1}),
        404,
        "conversation_not_found",
    )


def test_unknown_conversation_is_404(client):
    _error(client.get("/conversations/nope"), 404, "conversation_not_found")


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'"just a string"',
        b"[" * 50_000,
    ],
)
def test_malformed_bodies_are_400(client, body):
    _error(
        client.post("/question", data=body, content_type="application/json"), 400, "invalid_json"
    )


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"question": None},
        {"question": 42},
        {"question": ["a"]},
        {"question": "   \n\t "},
        {"question": "ok", "session_id": 7},
    ],
)
def test_bad_question_fields_are_400(client, payload):
    _error(client.post("/question", json=payload), 400, "invalid_request")


@pytest.mark.parametrize(
    "payload",
    [
        {"feedback": 1},
        {"conversation_id": "x"},
        {"conversation_id": "x", "feedback": 0},
        {"conversation_id": "x", "feedback": 2},
        {"conversation_id": "x", "feedback": "1"},
        {"conversation_id": "x", "feedback": True},
        {"conversation_id": "x", "feedback": 1.0},
        {"conversation_id": 5, "feedback": 1},
        {"conversation_id": "x", "feedback": 1, "comment": 3},
    ],
)
def test_bad_feedback_is_400(client, payload):
    _error(client.post("/feedback", json=payload), 400, "invalid_request")


def test_question_too_long_is_413(client):
    _error(client.post("/question", json={"question": "a" * 2001}), 413, "question_too_long")
    assert client.post("/question", json={"question": "cancel " + "a" * 1990}).status_code == 200


def test_body_too_large_is_413(client):
    body = json.dumps({"question": "hi", "padding": "x" * 70_000})
    _error(client.post("/question", data=body, content_type="application/json"), 413)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_non_json_content_type_is_415(client, content_type):
    kwargs = {"content_type": content_type} if content_type else {}
    _error(
        client.post("/question", data=json.dumps(QUESTION), **kwargs), 415, "unsupported_media_type"
    )
    _error(client.post("/feedback", data="{}", **kwargs), 415, "unsupported_media_type")


def test_unknown_route_and_wrong_method_are_json(client):
    _error(client.get("/nowhere"), 404, "not_found")
    _error(client.get("/question"), 405, "method_not_allowed")
    _error(client.delete("/feedback"), 405, "method_not_allowed")


def test_health_reports_database_provider_and_kb(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["database"] == "ok" and body["provider"] == "extractive"
    assert body["knowledge_base"]["documents"] >= 60


def test_database_down_spools_answers_and_health_is_degraded(settings, assistant, tmp_path):
    import pgserver

    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    database = Database(server.get_uri(), settings.migrations_dir)
    app = create_app(
        replace(settings, database_url=database.url, data_dir=tmp_path / "data"),
        assistant=assistant,
        database=database,
    )
    client = app.test_client()
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json()["status"] == "ok"
    assert health.get_json()["spool"] == 0
    stop_postgres(server)
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(database.url, connect_timeout=2)
        response = client.post("/question", json=QUESTION)
        assert response.status_code == 200 and response.get_json()["answer"]
        assert app.extensions["spool"].has_conversation(response.get_json()["conversation_id"])
        response = client.get("/health")
        assert response.status_code == 503
        body = response.get_json()
        assert body["status"] == "degraded" and body["database"] == "down"
        assert body["spool"] == 1
        _error(client.get("/stats"), 503, "database_unavailable")
    finally:
        app.extensions["flusher"].stop()
        database.close()
