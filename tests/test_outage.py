"""Start and serve while PostgreSQL is down: `assistant serve` (gunicorn) against a PostgreSQL
of the test's own that is stopped before the app starts, then started again."""

from __future__ import annotations

import os
import sys
import time

import psycopg
import pytest
import requests

from tests.conftest import _scratch_database, free_port, started, stop_postgres

QUESTIONS = [
    "how do I cancel my subscription?",
    "my card was charged twice",
    "can i watch on my ps5?",
    "how do I reset my password?",
    "is there a student discount?",
]


@pytest.mark.timeout(300)
def test_the_app_starts_answers_and_migrates_once_the_database_is_back(tmp_path):
    import pgserver

    pgdata = tmp_path / "pg"
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    _, url = _scratch_database(server.get_uri())
    stop_postgres(server)  # down before the app starts, its database never migrated

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "KB_PATH": "demo",
        "LLM_PROVIDER": "extractive",
        "PORT": str(port),
        "DATA_DIR": str(tmp_path / "data"),
        "WEB_CONCURRENCY": "2",
        "SPOOL_FLUSH_INTERVAL": "0.5",
        "RATE_LIMIT": "",
    }
    env.pop("OPENAI_API_KEY", None)
    command = [sys.executable, "-m", "assistant", "serve"]
    try:
        with started(command, env, f"{base}/health/live", tmp_path / "api.log"):
            health = requests.get(f"{base}/health", timeout=5)
            assert health.status_code == 503 and health.json()["database"] == "down"
            # Ready: it answers, and the spool keeps what it answers.
            assert requests.get(f"{base}/health/ready", timeout=5).status_code == 200
            answered = []
            for question in QUESTIONS:
                response = requests.post(
                    f"{base}/question", json={"question": question}, timeout=30
                )
                assert response.status_code == 200, response.text
                answered.append(response.json()["conversation_id"])
            assert requests.get(f"{base}/health", timeout=5).json()["spool"] == len(QUESTIONS)

            server = pgserver.get_server(pgdata, cleanup_mode="stop")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                body = requests.get(f"{base}/health", timeout=5).json()
                if body["status"] == "ok" and body["spool"] == 0:
                    break
                time.sleep(0.25)
            assert body["status"] == "ok" and body["spool"] == 0, body
            # New answers are stored too (straight away, or by a worker whose pool is still
            # reconnecting, through the spool: either way once).
            response = requests.post(f"{base}/question", json={"question": "prices"}, timeout=30)
            assert response.status_code == 200
            answered.append(response.json()["conversation_id"])
            deadline = time.monotonic() + 60
            while requests.get(f"{base}/health", timeout=5).json()["spool"]:
                assert time.monotonic() < deadline, "the spool did not drain"
                time.sleep(0.25)

        with psycopg.connect(url) as conn:
            versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
            rows = conn.execute(
                "SELECT id, count(*) FROM conversations GROUP BY id ORDER BY id"
            ).fetchall()
        expected = {path.name.split("_")[0] for path in _migrations_dir().glob("*.sql")}
        assert sorted(versions) == sorted(expected), versions
        assert sorted(row[0] for row in rows) == sorted(answered)
        assert all(count == 1 for _, count in rows)
    finally:
        server.cleanup()


def _migrations_dir():
    from assistant.config import PROJECT_ROOT

    return PROJECT_ROOT / "initdb"
