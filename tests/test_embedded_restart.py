"""An embedded PostgreSQL that dies under a running `assistant serve` is started again: the
test kill -9s its postmaster, and /health comes back to ok without restarting the app."""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil
import pytest
import requests

from tests.conftest import free_port, started


def _postmaster(pgdata) -> int:
    """The postmaster's pid, from the first line of postmaster.pid."""
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def _health_until(base: str, wanted: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    body: dict = {}
    while time.monotonic() < deadline:
        body = requests.get(f"{base}/health", timeout=10).json()
        if body["status"] == wanted:
            return body
        time.sleep(0.25)
    pytest.fail(f"/health did not become {wanted!r} within {seconds} s: {body}")


@pytest.mark.timeout(300)
def test_a_killed_embedded_postgres_is_started_again(tmp_path):
    data = tmp_path / "data"
    pgdata = data / "pgdata"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "KB_PATH": "demo",
        "LLM_PROVIDER": "extractive",
        "PORT": str(port),
        "DATA_DIR": str(data),
        "WEB_CONCURRENCY": "2",
        "RATE_LIMIT": "",
        # Not extractive answers' gthread: under gevent pgserver cannot stop the cluster at
        # exit by itself, which the last assertion covers.
        "WORKER_CLASS": "gevent",
    }
    for name in ("DATABASE_URL", "POSTGRES_HOST", "OPENAI_API_KEY"):
        env.pop(name, None)
    command = [sys.executable, "-m", "assistant", "serve"]
    with started(command, env, f"{base}/health", tmp_path / "api.log"):
        _health_until(base, "ok", 30)
        killed = _postmaster(pgdata)
        os.kill(killed, signal.SIGKILL)
        # Nothing but /health polls: its ping notices the death and starts the cluster again.
        assert _health_until(base, "degraded", 30)["database"] == "down"
        # A worker that has not queried since the kill may still say ok for HEALTH_MAX_AGE
        # (its last answered query counts as the ping): ok counts once a new postmaster runs.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = requests.get(f"{base}/health", timeout=10).json()
            try:
                if body["status"] == "ok" and _postmaster(pgdata) != killed:
                    break
            except (FileNotFoundError, IndexError, ValueError):
                pass  # pg_ctl is writing a new postmaster.pid
            time.sleep(0.25)
        assert body["status"] == "ok" and _postmaster(pgdata) != killed, body
        answer = requests.post(
            f"{base}/question", json={"question": "How do I cancel my subscription?"}, timeout=30
        ).json()
        # A worker whose pool has not yet seen the cluster back spools the row and replays it.
        deadline = time.monotonic() + 30
        while True:
            stored = requests.get(f"{base}/conversations/{answer['conversation_id']}", timeout=10)
            if stored.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert stored.status_code == 200
        assert stored.json()["question"] == "How do I cancel my subscription?"
        restarted = _postmaster(pgdata)
    # Stopping the app stops the cluster a worker started, as it does the one it started itself.
    assert _gone(restarted)


def _gone(pid: int, seconds: float = 15) -> bool:
    """Whether `pid` exits within `seconds` (a stopped postmaster lingers while it is reaped)."""
    try:
        psutil.Process(pid).wait(timeout=seconds)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True
