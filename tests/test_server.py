"""The API over a real socket: `assistant serve` (gunicorn) in its own process."""

import uuid

import psycopg
import pytest
import requests

from tests.conftest import running_api


@pytest.fixture(scope="module")
def served(database_url, tmp_path_factory):
    with running_api(database_url, tmp_path_factory.mktemp("served")) as api:
        yield api


def test_question_and_feedback_over_http(served):
    response = requests.post(
        f"{served.url}/question", json={"question": "how do I cancel my subscription?"}, timeout=10
    )
    assert response.status_code == 200
    body = response.json()
    assert body["intent"] == "cancel-subscription" and "{{" not in body["answer"]
    feedback = requests.post(
        f"{served.url}/feedback",
        timeout=10,
        json={"conversation_id": body["conversation_id"], "feedback": 1},
    )
    assert feedback.status_code == 200
    with psycopg.connect(served.database_url) as conn:
        row = conn.execute(
            "SELECT c.answer, f.feedback FROM conversations c JOIN feedback f"
            " ON f.conversation_id = c.id WHERE c.id = %s",
            (body["conversation_id"],),
        ).fetchone()
    assert row == (body["answer"], 1)


def test_errors_over_http_are_json(served):
    response = requests.post(
        f"{served.url}/question", data="{", timeout=10, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = requests.post(
        f"{served.url}/question",
        data=b"x" * 70_000,
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413 and "error" in response.json()


def test_info_logs_hold_no_keys_questions_or_comments(database_url, tmp_path):
    key = f"key-{uuid.uuid4().hex}"
    question = f"my card ending 4242 was charged twice, order {uuid.uuid4().hex}"
    comment = f"private remark {uuid.uuid4().hex}"
    publishable = f"pk-{uuid.uuid4().hex}"
    keys = {"API_KEYS": key, "PUBLISHABLE_KEYS": publishable, "CORS_ORIGINS": "https://a.example"}
    with running_api(database_url, tmp_path, LOG_LEVEL="INFO", **keys) as api:
        answer = requests.post(
            f"{api.url}/question", json={"question": question}, headers={"X-API-Key": key}
        )
        assert answer.status_code == 200
        denied = requests.post(
            f"{api.url}/question", json={"question": question}, headers={"X-API-Key": key[:-1]}
        )
        assert denied.status_code == 401
        elsewhere = {"X-API-Key": publishable, "Origin": "https://b.example"}
        assert requests.get(f"{api.url}/stats", headers=elsewhere).status_code == 403
        vote = {"conversation_id": answer.json()["conversation_id"], "feedback": -1}
        feedback = requests.post(
            f"{api.url}/feedback", json={**vote, "comment": comment}, headers={"X-API-Key": key}
        )
        assert feedback.status_code == 200
    log = (tmp_path / "api.log").read_text()
    assert "knowledge base:" in log, "nothing was logged at INFO: the check below proves nothing"
    for secret in (key, key[:-1], publishable, question, comment):
        assert secret not in log
