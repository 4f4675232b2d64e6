"""Three `assistant serve` instances on three loopback ports behind HAProxy (Debian's package),
sharing the machine's PostgreSQL (the embedded one without TEST_DATABASE_URL) and Redis, under
load from a separate process: every 200 is a row, one client's limit holds across the three,
`kill -9` of an instance mid-load loses no acknowledged row, and two `assistant worker`
processes finish every judge job exactly once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack

import psycopg
import pytest
import requests

from tests.conftest import _drop_scratch, _scratch_database, free_port, redis_url, started

KEYS = [f"load-key-{i}" for i in range(20)]
LIMITED_KEY = "limited-key"
LIMIT = 25

LOAD = r"""
import json, sys
from concurrent.futures import ThreadPoolExecutor
import requests

url, keys, per_key = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
questions = ["how do I cancel my subscription?", "my card was charged twice", "prices",
             "can i watch on my ps5?", "how do I reset my password?"]

def ask(i):
    key = keys[i % len(keys)]
    try:
        r = requests.post(f"{url}/question", headers={"X-API-Key": key},
                          json={"question": questions[i % len(questions)]}, timeout=60)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        return r.status_code, body.get("conversation_id")
    except requests.RequestException as exc:
        return type(exc).__name__, None

with ThreadPoolExecutor(8) as pool:
    for status, conversation in pool.map(ask, range(len(keys) * per_key)):
        print(json.dumps([status, conversation]), flush=True)
"""


def _haproxy_config(port: int, backends: list[int]) -> str:
    servers = "\n".join(
        f"    server app{i} 127.0.0.1:{backend} check inter 500ms fall 1 rise 2"
        for i, backend in enumerate(backends)
    )
    return f"""
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch

frontend api
    bind 127.0.0.1:{port}
    default_backend app

backend app
    balance roundrobin
    option httpchk GET /health/ready
{servers}
"""


@pytest.mark.timeout(600)
def test_three_replicas_behind_haproxy(embedded_server, tmp_path):
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (.ci/run installs it)")
    admin = os.environ.get("TEST_DATABASE_URL") or embedded_server.get_uri()
    name, database_url = _scratch_database(admin)
    ports = [free_port() for _ in range(3)]
    lb_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KB_PATH": "demo",
        "LLM_PROVIDER": "extractive",
        "JUDGE_PROVIDER": "heuristic",
        "JOB_WORKER_THREADS": "0",
        "WEB_CONCURRENCY": "2",
        "RATE_LIMIT": f"{LIMIT}/hour",
        "RATE_LIMIT_STORAGE_URI": redis_url(),
        "RATE_LIMIT_PREFIX": f"replicas-{name}",
        "API_KEYS": ",".join([*KEYS, LIMITED_KEY]),
        # One KB cache for the three, as compose's shared volume: the first builds the index.
        "DATA_DIR": str(tmp_path / "shared"),
    }
    env.pop("OPENAI_API_KEY", None)
    config = tmp_path / "haproxy.cfg"
    config.write_text(_haproxy_config(lb_port, ports), encoding="utf-8")
    lb = f"http://127.0.0.1:{lb_port}"
    processes: list[subprocess.Popen] = []
    try:
        with ExitStack() as stack:
            for i, port in enumerate(ports):
                instance = {**env, "PORT": str(port)}
                stack.enter_context(
                    started(
                        [sys.executable, "-m", "assistant", "serve"],
                        instance,
                        f"http://127.0.0.1:{port}/health/ready",
                        tmp_path / f"app{i}.log",
                    )
                )
            haproxy = subprocess.Popen(
                ["haproxy", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(haproxy)
            _wait_for(f"{lb}/health/live")

            # One client's limit, counted once for the three (in Redis).
            limited = [
                requests.post(
                    f"{lb}/question",
                    json={"question": "prices"},
                    headers={"X-API-Key": LIMITED_KEY},
                    timeout=30,
                ).status_code
                for _ in range(LIMIT + 10)
            ]
            assert limited.count(200) == LIMIT and limited.count(429) == 10, limited

            # Load from a separate process; one instance is killed (-9) while it runs.
            load = subprocess.Popen(
                [sys.executable, "-c", LOAD, lb, ",".join(KEYS), "12"],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(3)
            # The whole instance at once, its gunicorn master and workers, as a crash does.
            for pid in _listening_pids(ports[0]):
                os.kill(pid, signal.SIGKILL)
            output, _ = load.communicate(timeout=300)
            results = [json.loads(line) for line in output.splitlines()]
            codes = Counter(status for status, _ in results)
            acknowledged = [conversation for status, conversation in results if status == 200]
            assert len(results) == len(KEYS) * 12
            assert codes[200] >= 0.9 * len(results), codes
            # No key went over its limit here: nothing may be refused for it.
            assert codes[429] == 0, codes
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=20)

    with psycopg.connect(database_url) as conn:
        stored = {
            row[0]
            for row in conn.execute(
                "SELECT id FROM conversations WHERE id = ANY(%s)", (acknowledged,)
            )
        }
    # Every acknowledged answer is a row, the killed instance's included.
    assert stored == set(acknowledged)

    # Two workers finish every judge job exactly once.
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "assistant", "worker", "--until-idle"],
            env={**env, "DATA_DIR": str(tmp_path / f"worker{i}")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    for worker in workers:
        assert worker.wait(timeout=300) == 0
    try:
        with psycopg.connect(database_url) as conn:
            jobs = conn.execute("SELECT status, attempts FROM jobs").fetchall()
            pending = conn.execute(
                "SELECT count(*) FROM conversations WHERE relevance = 'PENDING'"
            ).fetchone()[0]
            rows = conn.execute("SELECT count(*) FROM conversations").fetchone()[0]
        assert len(jobs) == rows and pending == 0
        assert all(job == ("done", 1) for job in jobs), Counter(jobs)
    finally:
        _drop_scratch(admin, name)


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer")


def _listening_pids(port: int) -> list[int]:
    """The processes listening on `port`: a gunicorn master and its workers share it."""
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    pids = sorted({int(pid) for pid in re.findall(r"pid=(\d+)", out)})
    assert pids, f"nothing listens on {port}"
    return pids
