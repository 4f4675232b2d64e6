import re
import time
from pathlib import Path

import psycopg
import pytest

from assistant.config import PROJECT_ROOT
from assistant.db import Database, DatabaseUnavailable, migration_files

MIGRATIONS = PROJECT_ROOT / "initdb"


def _row(conversation_id: str, **extra) -> dict:
    row = {
        "id": conversation_id,
        "session_id": "s",
        "question": "q?",
        "answer": "a.",
        "model_used": "extractive",
        "provider": "extractive",
        "intent": "pay",
        "category": "PAYMENT",
        "confidence": 0.9,
        "status": "answered",
        "fallback": False,
        "sources": [{"id": "d1", "question": "q", "intent": "pay", "score": 1.0}],
        "response_time": 0.01,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost_usd": 0.0,
    }
    return {**row, **extra}


def test_migrations_apply_once_and_rerun_as_no_op(fresh_database_url):
    database = Database(fresh_database_url, MIGRATIONS)
    first = database.migrate()
    assert first == [version for version, _ in migration_files(MIGRATIONS)]
    database.save_conversation(_row("keep-me"))
    assert database.migrate() == []
    # The SQL itself is idempotent too, as docker-entrypoint-initdb.d may run it first.
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        for _, path in migration_files(MIGRATIONS):
            conn.execute(path.read_text())
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert [v for (v,) in versions] == first
    assert database.get_conversation("keep-me") is not None
    database.close()


def test_migrations_never_drop_or_truncate():
    for _, path in migration_files(MIGRATIONS):
        sql = re.sub(r"--.*", "", path.read_text())
        assert not re.search(r"\b(drop|truncate)\b", sql, re.IGNORECASE), path.name


def test_timestamp_columns_are_timestamptz_with_defaults(database):
    with psycopg.connect(database.url) as conn:
        types = dict(
            conn.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                " WHERE column_name = 'timestamp'"
            ).fetchall()
        )
    assert types == {
        "conversations.timestamp": "timestamp with time zone",
        "feedback.timestamp": "timestamp with time zone",
    }


def test_conversation_round_trip(database):
    database.save_conversation(_row("conv-rt", question="it's a 'quoted'; DROP TABLE x; --"))
    stored = database.get_conversation("conv-rt")
    assert stored["question"] == "it's a 'quoted'; DROP TABLE x; --"
    assert stored["relevance"] == "PENDING" and stored["sources"][0]["id"] == "d1"
    assert stored["timestamp"].tzinfo is not None and stored["feedback"] is None
    # Saving the same id again (a retry) neither fails nor duplicates.
    database.save_conversation(_row("conv-rt"))
    with psycopg.connect(database.url) as conn:
        rows = conn.execute("SELECT question FROM conversations WHERE id = 'conv-rt'").fetchall()
    assert rows == [("it's a 'quoted'; DROP TABLE x; --",)]


def test_feedback_upsert_latest_wins(database):
    database.save_conversation(_row("conv-fb"))
    assert database.save_feedback("conv-fb", 1, None)
    assert database.save_feedback("conv-fb", -1, "wrong steps")
    with psycopg.connect(database.url) as conn:
        rows = conn.execute(
            "SELECT feedback, comment FROM feedback WHERE conversation_id = 'conv-fb'"
        ).fetchall()
    assert rows == [(-1, "wrong steps")]
    assert database.get_conversation("conv-fb")["feedback"] == -1


def test_feedback_for_unknown_conversation_is_refused(database):
    assert database.save_feedback("no-such-conversation", 1, None) is False


def test_unreachable_database_pings_false(tmp_path: Path):
    from tests.conftest import free_port

    database = Database(
        f"postgresql://postgres@127.0.0.1:{free_port()}/x?connect_timeout=1", MIGRATIONS
    )
    assert database.ping() is False
    database.close()


def test_after_a_timeout_queries_fail_fast_and_ping_probes_directly(tmp_path: Path):
    from tests.conftest import free_port

    database = Database(
        f"postgresql://postgres@127.0.0.1:{free_port()}/x?connect_timeout=1", MIGRATIONS
    )
    try:
        with pytest.raises(DatabaseUnavailable):
            database.save_conversation({"id": "c1"})
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            database.save_conversation({"id": "c2"})
        assert time.monotonic() - started < 0.5
        # Ping is a direct connection (refused at once), never a wait on the pool: /health
        # stays fast through an outage, and still sees the database return.
        started = time.monotonic()
        assert database.ping() is False and time.monotonic() - started < 1.0
    finally:
        database.close()
