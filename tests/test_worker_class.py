"""WORKER_CLASS: how many conversations one gunicorn worker holds while each waits on a model.

`assistant serve` with one worker, the machine's PostgreSQL, memory rate limits and judge jobs
in the web process, answering from the bench's stand-in model. The stand-in is there for its
fixed latency (a real model's cannot be held still) and counts the requests it holds at once;
nothing here is timed. Under gevent every admitted question reaches the model together, and
psycopg's pool, the openai client, the job threads, the limiter and /metrics still do their
part; under gthread the worker's threads are the ceiling.
"""

from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest
import requests
from click.testing import CliRunner

from assistant.bench_model import latency_model
from assistant.cli import main
from tests.conftest import running_api

QUESTIONS = 20
LIMIT = 15


def _ask_at_once(base: str) -> list[requests.Response]:
    responses: list[requests.Response] = []
    lock = threading.Lock()

    def ask() -> None:
        response = requests.post(
            f"{base}/question", json={"question": "How do I cancel my subscription?"}, timeout=60
        )
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=ask) for _ in range(QUESTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def _judged(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM conversations WHERE relevance <> 'PENDING'"
        ).fetchone()[0]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("worker_class", "held"), [("gevent", LIMIT), ("gthread", 2)])
def test_one_worker_holds_every_waiting_conversation_under_gevent(tmp_path, worker_class, held):
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        pytest.skip("TEST_DATABASE_URL is not set (.ci/run sets it to 127.0.0.1:5432)")
    with (
        latency_model(1.0) as model,
        running_api(
            admin,
            tmp_path,
            WORKER_CLASS=worker_class,
            GUNICORN_THREADS="2",
            LLM_PROVIDER="openai",
            OPENAI_BASE_URL=model.url,
            OPENAI_API_KEY="test",
            OPENAI_MODEL="stand-in",
            JUDGE_PROVIDER="heuristic",
            RATE_LIMIT=f"{LIMIT}/minute",
        ) as served,
    ):
        responses = _ask_at_once(served.url)
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] * LIMIT + [429] * (QUESTIONS - LIMIT)
        assert model.peak == held
        answered = [r.json() for r in responses if r.status_code == 200]
        assert {answer["model_used"] for answer in answered} == {"stand-in"}
        assert not any(answer["fallback"] for answer in answered)
        with psycopg.connect(served.database_url) as conn:
            ids = [answer["conversation_id"] for answer in answered]
            stored = conn.execute(
                "SELECT count(*) FROM conversations WHERE id = ANY(%s)", (ids,)
            ).fetchone()[0]
        assert stored == LIMIT
        # The web process's job thread judges every answer, once.
        deadline = time.monotonic() + 60
        while _judged(served.database_url) < LIMIT and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _judged(served.database_url) == LIMIT
        metrics = requests.get(f"{served.url}/metrics", timeout=10).text
        answers = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("assistant_answers_total{")
        )
        assert answers == LIMIT


def test_an_unknown_worker_class_is_refused_before_anything_starts():
    result = CliRunner().invoke(main, ["serve"], env={"WORKER_CLASS": "eventlet"})
    assert result.exit_code == 1
    assert "WORKER_CLASS='eventlet': use one of gevent, gthread" in result.output
