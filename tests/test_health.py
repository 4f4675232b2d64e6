"""GET /health under probes: what a probe costs the database, and whether it waits for a thread.

Probes come often (`assistant bench api` polls every 100 ms, load balancers every few seconds)
and must answer in milliseconds under load. Two things kept them from it, measured on the
outage bench: two queries per probe (a ping and the job count), each waiting for CPU behind the
answers; and a probe queued in its worker behind answers when every thread was busy.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

import psycopg
import pytest
import requests

from assistant.app import create_app
from assistant.bench_model import latency_model
from assistant.db import Database
from assistant.routes import monitoring
from tests.conftest import running_api

QUESTION = {"question": "how do I cancel my subscription?"}


def _count_round_trips(database: Database, monkeypatch) -> list[str]:
    """Every connection this thread takes to PostgreSQL from now on, pooled or direct: one per
    query /health sends (the app's other threads are left out)."""
    taken: list[str] = []
    here = threading.get_ident()
    pool = database.pool
    pooled, direct = pool.connection, psycopg.connect

    def pooled_connection(*args, **kwargs):
        if threading.get_ident() == here:
            taken.append("pool")
        return pooled(*args, **kwargs)

    def direct_connection(*args, **kwargs):
        if threading.get_ident() == here:
            taken.append("direct")
        return direct(*args, **kwargs)

    monkeypatch.setattr(pool, "connection", pooled_connection)
    monkeypatch.setattr(psycopg, "connect", direct_connection)
    return taken


def test_a_burst_of_probes_queries_the_database_once_per_interval(
    settings, assistant, own_database, tmp_path, monkeypatch
):
    app = create_app(
        replace(settings, database_url=own_database.url, data_dir=tmp_path),
        assistant=assistant,
        database=own_database,
    )
    client = app.test_client()
    try:
        # The answer's insert is PostgreSQL answering: it stands for the ping.
        assert client.post("/question", json=QUESTION).status_code == 200
        taken = _count_round_trips(own_database, monkeypatch)
        started = time.monotonic()
        bodies = [client.get("/health").get_json() for _ in range(20)]
        elapsed = time.monotonic() - started
        assert {body["database"] for body in bodies} == {"ok"}
        queued = bodies[0]["jobs"]
        assert {body["jobs"] for body in bodies} == {queued}
        # The job count once; the ping answered by the insert. Were the burst slower than the
        # interval, a ping and a count per interval more (each probe used to send both).
        intervals = int(elapsed / monitoring.HEALTH_MAX_AGE)
        assert len(taken) <= 1 + 2 * intervals, (taken, elapsed)

        # At most HEALTH_MAX_AGE old: a job queued now is counted by a probe after that long.
        with psycopg.connect(own_database.url, autocommit=True) as conn:
            conn.execute("INSERT INTO jobs (kind, key) VALUES ('judge', 'health-probe-test')")
        time.sleep(monitoring.HEALTH_MAX_AGE)
        taken.clear()
        assert client.get("/health").get_json()["jobs"] == queued + 1
        assert taken, "a probe after the interval asks the database again"
    finally:
        app.extensions["flusher"].stop()


@pytest.mark.timeout(300)
def test_a_probe_is_answered_while_answers_wait_on_the_model(tmp_path, monkeypatch):
    """With the default threads, one gthread worker whose answers are in flight (as many as
    the former default of 2 threads held) still has a thread for a probe: it answers at once,
    not after the model."""
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        pytest.skip("TEST_DATABASE_URL is not set (.ci/run sets it to 127.0.0.1:5432)")
    monkeypatch.delenv("GUNICORN_THREADS", raising=False)
    with (
        latency_model(3.0) as model,
        running_api(
            admin,
            tmp_path,
            WORKER_CLASS="gthread",
            LLM_PROVIDER="openai",
            OPENAI_BASE_URL=model.url,
            OPENAI_API_KEY="test",
            OPENAI_MODEL="stand-in",
            JUDGE_PROVIDER="none",
        ) as served,
    ):
        asking = [
            threading.Thread(
                target=requests.post,
                args=(f"{served.url}/question",),
                kwargs={"json": QUESTION, "timeout": 60},
            )
            for _ in range(2)
        ]
        for thread in asking:
            thread.start()
        deadline = time.monotonic() + 30
        while model.peak < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert model.peak == 2, "both answers are waiting on the model"
        started = time.perf_counter()
        response = requests.get(f"{served.url}/health", timeout=30)
        took = time.perf_counter() - started
        assert response.status_code == 200
        assert took < model.latency / 2, f"the probe waited {took:.2f} s for a thread"
        for thread in asking:
            thread.join()
