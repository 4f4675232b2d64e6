"""The relevance judge: off the request path, re-runnable on whatever is still PENDING.

The judge model in the queue test is real: llama.cpp's OpenAI-compatible server with the
bundled model, served under a priced OpenAI name so its cost lands in the conversation.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from assistant.cli import main
from assistant.config import PROJECT_ROOT, Settings
from assistant.db import Database
from assistant.jobs import RETRY_BACKOFF, JobRunner
from assistant.judge import (
    LABELS,
    UNJUDGED,
    Judge,
    UnreadableVerdict,
    heuristic_verdict,
    parse_verdict,
    sources_text,
)
from assistant.llm import (
    Completion,
    OllamaProvider,
    OpenAICompatibleProvider,
    PriceTable,
    bundled_model_path,
    fast_model_path,
    local_available,
    make_judge_provider,
)
from tests.conftest import _drop_scratch, _scratch_database, free_port
from tests.test_providers import _require, _start_llama_server

SOURCES = [{"id": "a1", "question": "How do I cancel my plan?", "intent": "cancel_subscription"}]


@pytest.fixture(scope="module")
def judge_db(database_url):
    """A database of its own, so `judge --pending` sees only this module's rows."""
    name, url = _scratch_database(database_url)
    database = Database(url, PROJECT_ROOT / "initdb")
    database.migrate()
    yield database
    database.close()
    _drop_scratch(database_url, name)


def _save(database: Database, **values) -> str:
    row = {
        "id": uuid.uuid4().hex,
        "question": "how do I cancel my subscription?",
        "answer": "Open Account, choose Cancel plan and confirm [1].",
        "model_used": "gpt-4o-mini",
        "status": "answered",
        "confidence": 0.9,
        "response_time": 0.5,
        "cost_usd": 0.001,
        "sources": psycopg.types.json.Jsonb(SOURCES),
        **values,
    }
    columns = ", ".join(row)
    placeholders = ", ".join(f"%({c})s" for c in row)
    with psycopg.connect(database.url) as conn:
        conn.execute(f"INSERT INTO conversations ({columns}) VALUES ({placeholders})", row)
    return row["id"]


def _row(database: Database, conversation_id: str) -> dict:
    with psycopg.connect(database.url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM conversations WHERE id = %s", (conversation_id,)
        ).fetchone()


class ScriptedProvider:
    """A judge model that answers with a fixed text, optionally after `release` is set. Only
    for the queue's mechanics; the real model is exercised in the queue test below."""

    name = "openai"
    model = "gpt-4o-mini"
    context_entries = None

    def __init__(self, text: str, release: threading.Event | None = None):
        self.text = text
        self.release = release
        self.started = threading.Event()

    def complete(self, messages, *, references=()):
        self.started.set()
        if self.release is not None:
            self.release.wait(30)
        cost = PriceTable.load(PROJECT_ROOT / "data" / "model-prices.yaml").cost(
            self.name, self.model, 200, 20
        )
        return Completion(self.text, self.model, 200, 20, 0.01, cost_usd=cost)


VERDICT = '{"Relevance": "RELEVANT", "Explanation": "It gives the steps."}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VERDICT, ("RELEVANT", "It gives the steps.")),
        (
            '```json\n{"relevance": "partly relevant", "explanation": "Vague."}\n```',
            ("PARTLY_RELEVANT", "Vague."),
        ),
        (
            ' {"Relevance": "NON-RELEVANT", "Explanation": "Off topic."}\n',
            ("NON_RELEVANT", "Off topic."),
        ),
        ('{"relevance": "RELEVANT"}', ("RELEVANT", "")),
    ],
)
def test_parse_verdict_reads_the_relevance_field(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # Weighs one label, then concludes another: never read as the first one named.
        "It could be NON_RELEVANT since it skips the refund, but overall it is RELEVANT.",
        '{"relevance": "NON_RELEVANT"} {"relevance": "RELEVANT"}',
        'Sure! {"relevance": "RELEVANT", "explanation": "ok"} Done.',
        "The answer is not relevant",
        '{"relevance": "USEFUL"}',
        '["RELEVANT"]',
        "",
    ],
    ids=["mixed-labels", "two-objects", "prose-around", "prose-only", "unknown", "list", "empty"],
)
def test_parse_verdict_refuses_what_it_cannot_read(text):
    with pytest.raises(UnreadableVerdict):
        parse_verdict(text)


@pytest.mark.parametrize(
    ("status", "confidence", "relevance"),
    [
        ("answered", 0.95, "RELEVANT"),
        ("answered", 0.45, "PARTLY_RELEVANT"),
        ("answered", 0.1, "NON_RELEVANT"),
        ("answered", None, "NON_RELEVANT"),
        ("handoff", 0.2, "PARTLY_RELEVANT"),
        ("small_talk", 0.0, "PARTLY_RELEVANT"),
        # A contact passed on after a handoff: an acknowledgement, no knowledge-base miss.
        ("contact", 0.0, "PARTLY_RELEVANT"),
        ("out_of_scope", 0.0, "NON_RELEVANT"),
    ],
)
def test_heuristic_verdict_is_labelled(status, confidence, relevance):
    verdict = heuristic_verdict(status, confidence, "no judge model configured")
    assert verdict.relevance == relevance and verdict.source == "heuristic"
    assert verdict.explanation.startswith("heuristic (no judge model configured)")
    assert verdict.prompt_tokens == verdict.completion_tokens == 0 and verdict.cost_usd == 0


def test_sources_text_reads_stored_rows_and_sources():
    assert sources_text(SOURCES) == "[1] How do I cancel my plan? (intent: cancel_subscription)"
    assert sources_text([]) == "(none)"


def test_judge_settings_choose_the_judge_model():
    assert make_judge_provider(Settings.from_env({"JUDGE_PROVIDER": "heuristic"})) is None
    judge = make_judge_provider(
        Settings.from_env({"JUDGE_PROVIDER": "openai", "JUDGE_MODEL": "gpt-4o"})
    )
    assert isinstance(judge, OpenAICompatibleProvider) and judge.model == "gpt-4o"
    judge = make_judge_provider(
        Settings.from_env({"JUDGE_PROVIDER": "ollama", "JUDGE_MODEL": "llama3.2"})
    )
    assert isinstance(judge, OllamaProvider) and judge.model == "llama3.2"
    # `auto` follows LLM_PROVIDER; an extractive answerer means no judge model.
    assert make_judge_provider(Settings.from_env({"LLM_PROVIDER": "extractive"})) is None
    # Nor does the bundled local model judge unless asked: it cannot write a verdict.
    nothing_else = {"OLLAMA_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    assert make_judge_provider(Settings.from_env(nothing_else)) is None
    if local_available(Settings.from_env({})):
        named = make_judge_provider(
            Settings.from_env({"JUDGE_PROVIDER": "local", "JUDGE_MODEL": str(bundled_model_path())})
        )
        assert named.name == "local" and named.path == bundled_model_path()


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory):
    _require("local", local_available(Settings.from_env({})))
    model = fast_model_path(bundled_model_path(), tmp_path_factory.mktemp("judge-model"))
    process, base = _start_llama_server(model, "gpt-4o-mini")
    yield base
    process.kill()
    process.wait(timeout=20)


def _enqueue(database: Database, conversation_id: str) -> None:
    """The judge job `Database.save_conversation` writes beside a row (`_save` writes the row
    alone, with columns the app never sets)."""
    with psycopg.connect(database.url) as conn:
        conn.execute("INSERT INTO jobs (kind, key) VALUES ('judge', %s)", (conversation_id,))


def _job(database: Database, conversation_id: str) -> dict:
    with psycopg.connect(database.url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM jobs WHERE kind = 'judge' AND key = %s", (conversation_id,)
        ).fetchone()


def test_a_job_judges_a_pending_row_with_a_real_model_and_adds_its_cost(
    judge_db, judge_server, tmp_path
):
    settings = replace(
        Settings.from_env({}),
        data_dir=tmp_path,
        openai_base_url=judge_server,
        openai_model="gpt-4o-mini",
        llm_max_tokens=80,
    )
    runner = JobRunner(judge_db, Judge(OpenAICompatibleProvider(settings)))
    conversation_id = _save(judge_db)
    _enqueue(judge_db, conversation_id)
    assert _row(judge_db, conversation_id)["relevance"] == "PENDING"

    assert runner.run_until_idle(120) >= 1
    row = _row(judge_db, conversation_id)
    # Asked for structured output, llama.cpp holds even a 135M model to the verdict's schema.
    assert row["relevance"] in LABELS and row["relevance_explanation"], row
    assert row["relevance_source"] == "llm"
    assert row["judge_model"] == "gpt-4o-mini" and row["judged_at"] is not None
    assert row["eval_prompt_tokens"] > 100 and row["eval_completion_tokens"] > 0
    assert row["eval_total_tokens"] == row["eval_prompt_tokens"] + row["eval_completion_tokens"]
    judge_cost = (row["eval_prompt_tokens"] * 0.15 + row["eval_completion_tokens"] * 0.60) / 1e6
    assert row["cost_usd"] == pytest.approx(0.001 + judge_cost)
    # The answer's own timing is untouched by judging.
    assert row["response_time"] == 0.5
    job = _job(judge_db, conversation_id)
    assert job["status"] == "done" and job["attempts"] == 1


def test_a_failing_judge_is_retried_with_backoff_then_given_up(judge_db, tmp_path):
    dead = replace(
        Settings.from_env({}),
        data_dir=tmp_path,
        openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
        llm_max_retries=0,
    )
    runner = JobRunner(judge_db, Judge(OpenAICompatibleProvider(dead)), max_attempts=2)
    failed = _save(judge_db)
    _enqueue(judge_db, failed)
    runner.run_until_idle(30)
    job = _job(judge_db, failed)
    assert job["status"] == "queued" and job["attempts"] == 1
    assert job["last_error"] == "ProviderError" and job["locked_by"] is None
    with psycopg.connect(judge_db.url) as conn:
        wait = conn.execute("SELECT extract(epoch FROM %s - now())", (job["run_after"],))
        assert 3 < wait.fetchone()[0] <= RETRY_BACKOFF
        # Its time comes; it fails again, the last of its attempts.
        conn.execute("UPDATE jobs SET run_after = now() WHERE id = %s", (job["id"],))
    runner.run_until_idle(30)
    job = _job(judge_db, failed)
    assert job["status"] == "failed" and job["attempts"] == 2 and job["finished_at"]
    assert _row(judge_db, failed)["relevance"] == "PENDING"

    # The runner goes on with the next job, and `judge --pending` can still finish the row.
    runner.judge = Judge(ScriptedProvider(VERDICT))
    judged = _save(judge_db)
    _enqueue(judge_db, judged)
    runner.run_until_idle(30)
    assert _row(judge_db, judged)["relevance"] == "RELEVANT"
    assert _job(judge_db, judged)["status"] == "done"
    assert _row(judge_db, failed)["relevance"] == "PENDING"


def test_a_verdict_is_written_and_charged_once(judge_db):
    conversation_id = _save(judge_db, cost_usd=0.0)
    judge = Judge(ScriptedProvider(VERDICT))
    args = (judge_db, conversation_id, "q", "a", "(none)", "answered", 0.9)
    assert judge.judge_row(*args) is True
    assert judge.judge_row(*args) is False
    row = _row(judge_db, conversation_id)
    assert row["cost_usd"] == pytest.approx((200 * 0.15 + 20 * 0.60) / 1e6)
    assert (row["eval_prompt_tokens"], row["eval_completion_tokens"]) == (200, 20)


def test_an_unreadable_reply_is_stored_unjudged_with_its_tokens(judge_db):
    conversation_id = _save(judge_db, confidence=0.2)
    Judge(ScriptedProvider("Well, it depends.")).judge_row(
        judge_db, conversation_id, "q", "a", "(none)", "answered", 0.2
    )
    row = _row(judge_db, conversation_id)
    assert row["relevance"] == UNJUDGED and row["relevance_source"] == "llm"
    assert row["relevance_explanation"].startswith("the judge's reply could not be read")
    assert row["eval_prompt_tokens"] == 200 and row["cost_usd"] > 0.001


def test_a_killed_worker_leaves_its_job_to_another_after_the_lease(judge_db, tmp_path):
    """`assistant worker` is killed (-9) while its judge model holds the request: the row
    stays PENDING, and once the job's lease is over another runner takes it and judges it."""
    conversation_id = _save(judge_db, confidence=0.95)
    _enqueue(judge_db, conversation_id)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        env = {
            **os.environ,
            "DATABASE_URL": judge_db.url,
            "DATA_DIR": str(tmp_path),
            "JUDGE_PROVIDER": "openai",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/v1",
            "OPENAI_API_KEY": "",
            "LLM_DEADLINE": "120",
            "LLM_READ_TIMEOUT": "120",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "assistant", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # The judge's request has reached the model when the process dies.
            silent.settimeout(60)
            connection, _ = silent.accept()
            worker.kill()
            connection.close()
        finally:
            worker.kill()
            worker.wait(timeout=20)
    job = _job(judge_db, conversation_id)
    assert job["status"] == "running" and job["attempts"] == 1
    assert _row(judge_db, conversation_id)["relevance"] == "PENDING"

    takeover = JobRunner(judge_db, Judge(None), lease=1.0)
    time.sleep(1.2)
    assert takeover.run_until_idle(30) >= 1
    job = _job(judge_db, conversation_id)
    assert job["status"] == "done" and job["attempts"] == 2
    assert job["locked_by"] == takeover.name
    row = _row(judge_db, conversation_id)
    assert row["relevance"] == "RELEVANT" and row["relevance_source"] == "heuristic"


def test_judge_pending_finishes_rows_left_pending(judge_db, monkeypatch, tmp_path):
    conversation_id = _save(judge_db, confidence=0.95)
    monkeypatch.setenv("DATABASE_URL", judge_db.url)
    monkeypatch.setenv("JUDGE_PROVIDER", "heuristic")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["judge", "--pending"])
    assert result.exit_code == 0, result.output
    assert "with heuristic" in result.output
    row = _row(judge_db, conversation_id)
    assert row["relevance"] == "RELEVANT" and row["relevance_source"] == "heuristic"
    again = CliRunner().invoke(main, ["judge", "--pending"])
    assert again.exit_code == 0 and again.output.startswith("judged 0 ")


def test_judge_without_pending_is_a_usage_error():
    result = CliRunner().invoke(main, ["judge"])
    assert result.exit_code == 2 and "--pending" in result.output
