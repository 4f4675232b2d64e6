"""Judge jobs in PostgreSQL: one per stored answer, waiting while no runner runs, taken by any
number of `assistant worker` processes and web threads, each finished exactly once.

The judge model here is an OpenAI-compatible stand-in that takes 100 ms a verdict and counts
its requests: that count is what "judged exactly once" means, and no real model answers on
demand with a given verdict (test_judge.py judges with a real llama.cpp server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
from psycopg.rows import dict_row

from assistant.app import create_app
from assistant.db import Database
from assistant.routes.questions import conversation_row
from tests.conftest import serving

VERDICT = json.dumps({"relevance": "RELEVANT", "explanation": "It answers."})


class SlowJudge(ThreadingHTTPServer):
    """Answers every chat request with VERDICT after 100 ms, and counts them."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _JudgeHandler)
        self.requests = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _JudgeHandler(BaseHTTPRequestHandler):
    server: SlowJudge

    def log_message(self, *args) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests += 1
        time.sleep(0.1)
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "judge",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": VERDICT},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def slow_judge() -> Iterator[SlowJudge]:
    server = SlowJudge()
    with serving(server):
        yield server


def _judge_env(judge: SlowJudge, database: Database, tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database.url,
        "DATA_DIR": str(tmp_path),
        "JUDGE_PROVIDER": "openai",
        "OPENAI_BASE_URL": judge.url,
        "OPENAI_MODEL": "judge",
        "OPENAI_API_KEY": "",
    }


def _jobs(database: Database) -> list[dict]:
    with psycopg.connect(database.url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM jobs ORDER BY id").fetchall()


def _relevance(database: Database) -> list[str]:
    with psycopg.connect(database.url) as conn:
        return [r[0] for r in conn.execute("SELECT relevance FROM conversations")]


def _app(settings, assistant, database: Database, tmp_path, **changes):
    return create_app(
        replace(settings, database_url=database.url, data_dir=tmp_path, **changes),
        assistant=assistant,
        database=database,
    )


def _ask_many(client, question: str, count: int) -> None:
    """`count` answered conversations, each its own question (numbered)."""
    for i in range(count):
        numbered = f"{question} ({i})"
        assert client.post("/question", json={"question": numbered}).status_code == 200


def test_jobs_wait_without_a_runner_and_workers_take_each_once(
    settings, assistant, own_database, slow_judge, tmp_path
):
    app = _app(settings, assistant, own_database, tmp_path, job_worker_threads=0)
    client = app.test_client()
    try:
        _ask_many(client, "how do I cancel my subscription?", 30)
        # No runner: the answers are stored, their jobs wait, and /health says how many.
        assert client.get("/health").get_json()["jobs"] == 30
        assert set(_relevance(own_database)) == {"PENDING"}
    finally:
        app.extensions["flusher"].stop()

    env = _judge_env(slow_judge, own_database, tmp_path)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "assistant", "worker", "--until-idle"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    jobs = _jobs(own_database)
    assert len(jobs) == 30 and {job["status"] for job in jobs} == {"done"}
    assert all(job["attempts"] == 1 for job in jobs)
    # Both workers took jobs, and the judge model was asked exactly once per answer.
    assert len({job["locked_by"] for job in jobs}) == 2
    assert slow_judge.requests == 30
    assert set(_relevance(own_database)) == {"RELEVANT"}


def test_web_threads_run_the_jobs_in_the_background(
    settings, assistant, own_database, slow_judge, tmp_path
):
    judged = replace(
        settings, judge_provider="openai", openai_base_url=slow_judge.url, openai_model="judge"
    )
    app = _app(judged, assistant, own_database, tmp_path, job_worker_threads=2)
    client = app.test_client()
    try:
        _ask_many(client, "is there a free trial?", 6)
        deadline = time.monotonic() + 30
        while set(_relevance(own_database)) != {"RELEVANT"} and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        app.extensions["jobs"].stop()
        app.extensions["flusher"].stop()
    assert set(_relevance(own_database)) == {"RELEVANT"}
    assert slow_judge.requests == 6
    assert {job["status"] for job in _jobs(own_database)} == {"done"}


def test_a_spooled_answer_gets_its_job_when_the_spool_is_replayed(
    settings, assistant, own_database, tmp_path
):
    app = _app(settings, assistant, own_database, tmp_path, job_worker_threads=0)
    spool, flusher = app.extensions["spool"], app.extensions["flusher"]
    try:
        # As the app does while PostgreSQL is away: the answer's row goes to the spool.
        row = conversation_row(assistant.answer("prices"))
        spool.add_conversation(row)
        assert _jobs(own_database) == []
        assert flusher.flush() == 1
    finally:
        flusher.stop()
    conversation_id = row["id"]
    [job] = _jobs(own_database)
    assert (job["kind"], job["key"], job["status"]) == ("judge", conversation_id, "queued")
    assert app.extensions["jobs"].run_until_idle(30) == 1
    assert _relevance(own_database) != ["PENDING"]
