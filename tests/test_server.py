"""The API over a real socket: `assistant serve` (gunicorn) in its own process."""

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
    assert body["intent"] == "cancel_subscription" and "{{" not in body["answer"]
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
