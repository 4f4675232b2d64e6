"""WORKER_CLASS: how many conversations one gunicorn worker holds while each waits on a model.

`assistant serve` with one worker, the machine's PostgreSQL, memory rate limits and judge jobs
in the web process, answering from the bench's stand-in model. The stand-in is there for its
fixed latency (a real model's cannot be held still) and counts the requests it holds at once;
nothing here is timed. Under gevent every admitted question reaches the model together, and
psycopg's pool, the openai client, the job threads, the limiter and /metrics still do their
part; under gthread the worker's threads are the ceiling.

With LLM_PROVIDER=auto the class is that of the provider auto resolves to, resolved in a child
process so that `serve` has imported nothing gevent must patch first.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import requests
from click.testing import CliRunner

from assistant.bench_model import latency_model
from assistant.cli import main
from assistant.commands.serving import resolve_auto_provider
from assistant.config import Settings
from tests.conftest import running_api
from tests.test_providers import fake_ollama  # noqa: F401 (a fixture)

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


@pytest.fixture(scope="module")
def no_ollama() -> Iterator[str]:
    """An address where nothing listens, held so that nothing else (another test's stand-in
    Ollama on this shared machine) can take its port meanwhile."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


def _auto_env(no_ollama: str, **env: str) -> dict[str, str]:
    """LLM_PROVIDER=auto with no OpenAI key and nothing listening where Ollama would be."""
    nowhere = {"OLLAMA_BASE_URL": no_ollama, "OLLAMA_PROBE_TIMEOUT": "1"}
    return {"LLM_PROVIDER": "auto", **nowhere, **env}


def _auto(no_ollama: str, **env: str) -> Settings:
    return Settings.from_env(_auto_env(no_ollama, **env))


def test_auto_with_no_model_to_wait_on_serves_with_gthread_like_extractive(no_ollama):
    resolved = resolve_auto_provider(_auto(no_ollama))
    assert resolved.llm_provider == "extractive"
    assert resolved.gunicorn_worker_class == "gthread"


def test_auto_that_finds_a_model_server_serves_with_gevent(no_ollama, fake_ollama):  # noqa: F811
    with_key = resolve_auto_provider(_auto(no_ollama, OPENAI_API_KEY="sk-test"))
    assert (with_key.llm_provider, with_key.gunicorn_worker_class) == ("openai", "gevent")
    found = resolve_auto_provider(_auto(fake_ollama.url, OLLAMA_MODEL="phi3"))
    assert (found.llm_provider, found.gunicorn_worker_class) == ("ollama", "gevent")


def test_a_named_provider_or_worker_class_is_kept_as_set(no_ollama):
    named = Settings.from_env({"LLM_PROVIDER": "openai"})
    assert resolve_auto_provider(named) is named
    chosen = _auto(no_ollama, WORKER_CLASS="gevent")
    assert resolve_auto_provider(chosen) is chosen
    assert resolve_auto_provider(chosen).gunicorn_worker_class == "gevent"


def test_resolving_auto_imports_nothing_gevent_must_patch_first(no_ollama):
    """In a fresh interpreter (this one imported the providers long ago), as `serve` calls it
    before deciding whether to patch the standard library."""
    code = (
        "import sys\n"
        "from assistant.commands.serving import resolve_auto_provider\n"
        "from assistant.config import Settings\n"
        f"resolved = resolve_auto_provider(Settings.from_env({_auto_env(no_ollama)!r}))\n"
        "print(resolved.llm_provider)\n"
        "print(sorted({'ssl', 'httpx', 'openai', 'assistant.llm', 'psycopg'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True
    )
    assert done.stdout.splitlines() == ["extractive", "[]"]


def test_serve_with_auto_and_no_model_starts_gthread_workers(no_ollama, tmp_path):
    """`assistant serve` in a process of its own, as deployed (it may patch for gevent)."""
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        pytest.skip("TEST_DATABASE_URL is not set (.ci/run sets it to 127.0.0.1:5432)")
    with running_api(admin, tmp_path, **_auto_env(no_ollama)) as served:
        answer = requests.post(
            f"{served.url}/question", json={"question": "How do I cancel?"}, timeout=30
        ).json()
    assert answer["model_used"] == "extractive"
    log = (tmp_path / "api.log").read_text()
    assert "LLM_PROVIDER=auto resolved to extractive: gthread workers" in log
    assert "Using worker: gthread" in log and "gevent" not in log
