"""The API over a real socket: `assistant serve` (gunicorn) in its own process."""

import os
import subprocess
import sys
import time

import psycopg
import pytest
import requests

from tests.conftest import free_port


@pytest.fixture(scope="module")
def served(database_url, tmp_path_factory):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KB_PATH": "demo",
        "PORT": str(port),
        "DATA_DIR": str(tmp_path_factory.mktemp("served")),
        "WEB_CONCURRENCY": "2",
        "LLM_PROVIDER": "extractive",
    }
    env.pop("OPENAI_API_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "assistant", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited: {process.stdout.read()}")
        try:
            if requests.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("server did not become healthy within 60 s")
    yield base
    process.terminate()
    process.wait(timeout=20)


def test_question_and_feedback_over_http(served, database_url):
    response = requests.post(
        f"{served}/question", json={"question": "how do I cancel my subscription?"}, timeout=10
    )
    assert response.status_code == 200
    body = response.json()
    assert body["intent"] == "cancel_subscription" and "{{" not in body["answer"]
    feedback = requests.post(
        f"{served}/feedback",
        timeout=10,
        json={"conversation_id": body["conversation_id"], "feedback": 1},
    )
    assert feedback.status_code == 200
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT c.answer, f.feedback FROM conversations c JOIN feedback f"
            " ON f.conversation_id = c.id WHERE c.id = %s",
            (body["conversation_id"],),
        ).fetchone()
    assert row == (body["answer"], 1)


def test_errors_over_http_are_json(served):
    response = requests.post(
        f"{served}/question", data="{", timeout=10, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = requests.post(
        f"{served}/question",
        data=b"x" * 70_000,
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413 and "error" in response.json()
