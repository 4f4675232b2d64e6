"""Retention and erasure: `assistant db purge` and `assistant db forget`, run as commands
against a real PostgreSQL database of the test's own and a spool directory, each recorded in
the `erasures` table without what it deleted; and Grafana's read-only role."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from assistant.cli import main
from assistant.config import PROJECT_ROOT
from assistant.keys import fingerprint
from assistant.retention import parse_age
from assistant.spool import Spool
from tests.test_db import _row
from tests.test_generated_answers import (  # noqa: F401 (stand_in is a fixture)
    _app,
    _app_on_a_database_that_is_down,
    _settings,
    stand_in,
)


def _run(database_url: str, data_dir, *args: str):
    env = {"DATABASE_URL": database_url, "DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"}
    return CliRunner().invoke(main, ["db", *args], env=env, catch_exceptions=False)


def _all_rows(database_url: str) -> dict[str, list[dict]]:
    """Every row of every table in the public schema, by table."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        tables = [
            row["table_name"]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        return {
            table: conn.execute(
                psycopg.sql.SQL("SELECT * FROM {}").format(psycopg.sql.Identifier(table))
            ).fetchall()
            for table in tables
        }


def _erasures(database_url: str) -> list[dict]:
    return _all_rows(database_url)["erasures"]


def _spool_line(row: dict) -> str:
    """A conversation as the spool writes it (Spool.add_conversation stamps the time of
    writing; an old spooled row is what a long outage leaves)."""
    return json.dumps({"kind": "conversation", "row": row}) + "\n"


def test_purge_deletes_what_is_older_with_its_feedback_and_jobs_and_records_it(
    own_database, tmp_path
):
    now = datetime.now(UTC)
    old = now - timedelta(days=100)
    own_database.save_conversations(
        [
            _row("old-1", question="old question one", timestamp=old.isoformat()),
            _row("old-2", question="old question two", timestamp=old.isoformat()),
            _row("recent", question="recent question"),
        ]
    )
    assert own_database.save_feedback("old-1", -1, "old comment")
    assert own_database.save_feedback("recent", 1, "recent comment")
    spool = Spool(tmp_path / "spool")
    spool.add_conversation(_row("spooled-recent", question="spooled recent"))
    with spool.path.open("a") as handle:
        handle.write(_spool_line(_row("spooled-old", timestamp=old.isoformat())))
    spool.add_feedback("spooled-old", 1, "spooled old comment")

    result = _run(own_database.url, tmp_path, "purge", "--older-than", "90d")

    assert result.exit_code == 0, result.output
    assert "deleted 2 conversations, 1 feedback, 2 jobs and 2 spooled records" in result.output
    rows = _all_rows(own_database.url)
    assert [row["id"] for row in rows["conversations"]] == ["recent"]
    assert [row["conversation_id"] for row in rows["feedback"]] == ["recent"]
    assert [row["key"] for row in rows["jobs"]] == ["recent"]
    # The spooled vote was given now, on a conversation the purge removed: it goes too.
    assert [
        entry.get("row", {}).get("id") or entry["conversation_id"] for entry in spool.entries()
    ] == ["spooled-recent"]
    [record] = rows["erasures"]
    assert record["action"] == "purge"
    assert (record["conversations"], record["feedback"], record["jobs"]) == (2, 1, 2)
    # Two spool records: the old conversation and the vote on it.
    assert record["spooled"] == 2
    assert abs(record["cutoff"] - (now - timedelta(days=90))) < timedelta(minutes=1)
    assert "old" not in json.dumps(record, default=str)


def test_forget_leaves_nothing_of_the_session_in_any_table_or_the_spool(
    stand_in,  # noqa: F811
    assistant,
    own_database,
    tmp_path,
):
    session = f"customer-{uuid.uuid4().hex}"
    with _app(stand_in, assistant, own_database, tmp_path) as app:
        client = app.test_client()
        ids = []
        for question in ("how do I cancel my subscription?", "can I pause it instead?"):
            response = client.post("/question", json={"question": question, "session_id": session})
            assert response.status_code == 200
            ids.append(response.get_json()["conversation_id"])
        assert (
            client.post(
                "/feedback", json={"conversation_id": ids[0], "feedback": -1, "comment": "too slow"}
            ).status_code
            == 200
        )
        other = client.post(
            "/question", json={"question": "how do I cancel?", "session_id": "someone-else"}
        ).get_json()["conversation_id"]
    down = _app_on_a_database_that_is_down(
        _settings(stand_in.url, tmp_path), app.extensions["assistant"], own_database
    )
    try:
        spooled = down.test_client().post(
            "/question", json={"question": "my new card is charged?", "session_id": session}
        )
        assert spooled.status_code == 200
    finally:
        down.extensions["flusher"].stop()
    # A vote spooled on a conversation PostgreSQL holds: it goes with the session too.
    Spool(tmp_path / "spool").add_feedback(ids[1], 1, "spooled comment")

    result = _run(own_database.url, tmp_path, "forget", "--session", session, "--all-owners")

    assert result.exit_code == 0, result.output
    everything = json.dumps(_all_rows(own_database.url), default=str)
    for trace in (session, *ids, "too slow", "pause it instead"):
        assert trace not in everything
    assert other in everything
    spool_text = "".join(p.read_text() for p in (tmp_path / "spool").glob("*.jsonl"))
    assert session not in spool_text and "spooled comment" not in spool_text
    [record] = _erasures(own_database.url)
    assert record["action"] == "forget" and record["cutoff"] is None
    assert (record["conversations"], record["feedback"], record["jobs"], record["spooled"]) == (
        2,
        1,
        2,
        2,
    )


def test_forgetting_an_unknown_session_is_recorded_as_nothing_deleted(own_database, tmp_path):
    result = _run(own_database.url, tmp_path, "forget", "--session", "nobody", "--all-owners")
    assert result.exit_code == 0, result.output
    [record] = _erasures(own_database.url)
    assert (record["conversations"], record["spooled"]) == (0, 0)


def test_forget_with_an_owner_leaves_the_same_session_id_of_another_key(own_database, tmp_path):
    # Two sites' widgets, each with its own key, both chose the session id "visitor-1" for
    # two different customers; the first customer asks to be forgotten.
    asked, other = fingerprint("pk-site-a-0123456789abcdef"), fingerprint("pk-site-b-0123456789")
    own_database.save_conversations(
        [
            _row("a-1", session_id="visitor-1", owner=asked, question="customer a asks"),
            _row("b-1", session_id="visitor-1", owner=other, question="customer b asks"),
        ]
    )
    assert own_database.save_feedback("b-1", 1, "customer b is happy")
    spool = Spool(tmp_path / "spool")
    spool.add_conversation(_row("a-2", session_id="visitor-1", owner=asked))
    spool.add_conversation(_row("b-2", session_id="visitor-1", owner=other))

    result = _run(
        own_database.url, tmp_path, "forget", "--session", "visitor-1", "--owner", asked.upper()
    )

    assert result.exit_code == 0, result.output
    assert "deleted 1 conversations, 0 feedback, 1 jobs and 1 spooled records" in result.output
    rows = _all_rows(own_database.url)
    assert [row["id"] for row in rows["conversations"]] == ["b-1"]
    assert [row["comment"] for row in rows["feedback"]] == ["customer b is happy"]
    assert [entry["row"]["id"] for entry in spool.entries()] == ["b-2"]


@pytest.mark.parametrize(
    "scope",
    [
        [],
        ["--owner", "0" * 64, "--all-owners"],
        ["--owner", "pk-site-a-0123456789abcdef"],
    ],
    ids=["neither", "both", "a-key-not-its-fingerprint"],
)
def test_forget_refuses_to_guess_whose_session_it_is(own_database, tmp_path, scope):
    own_database.save_conversation(_row("kept", session_id="visitor-1"))
    result = _run(own_database.url, tmp_path, "forget", "--session", "visitor-1", *scope)
    assert result.exit_code == 2
    assert "--owner" in result.output
    rows = _all_rows(own_database.url)
    assert [row["id"] for row in rows["conversations"]] == ["kept"] and rows["erasures"] == []


@pytest.mark.parametrize("age", ["90", "90x", "0d", "-5d", "d"])
def test_purge_refuses_an_age_it_cannot_read(own_database, tmp_path, age):
    result = _run(own_database.url, tmp_path, "purge", "--older-than", age)
    assert result.exit_code == 2
    assert "is not an age such as 90d, 12h or 2w" in result.output
    assert _erasures(own_database.url) == []


def test_ages_in_hours_days_and_weeks():
    assert parse_age("12h") == timedelta(hours=12)
    assert parse_age("90d") == timedelta(days=90)
    assert parse_age("2W") == timedelta(weeks=2)


def test_grafana_reads_through_a_login_that_can_only_select(own_database):
    """The migration's grafana_reader role and initdb/grafana-login.sh's login, as the
    postgres image runs it (psql, with the server's address in PG* variables)."""
    own_database.save_conversation(_row("visible"))
    login = f"msa_test_grafana_{uuid.uuid4().hex[:8]}"
    where = psycopg.conninfo.conninfo_to_dict(own_database.url)
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": where.get("host", ""),
        "PGPORT": str(where.get("port", 5432)),
        "POSTGRES_USER": where.get("user", "postgres"),
        "POSTGRES_DB": where["dbname"],
        "GRAFANA_DB_USER": login,
        "GRAFANA_DB_PASSWORD": "it's a secret",
    }
    script = PROJECT_ROOT / "initdb" / "grafana-login.sh"
    admin = psycopg.connect(own_database.url, autocommit=True)
    try:
        done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        with psycopg.connect(own_database.url, user=login, autocommit=True) as grafana:
            assert grafana.execute("SELECT count(*) FROM conversations").fetchone() == (1,)
            grafana.execute("SELECT count(*) FROM feedback")
            for statement in (
                "INSERT INTO feedback (conversation_id, feedback) VALUES ('visible', 1)",
                "UPDATE conversations SET answer = ''",
                "DELETE FROM conversations",
                "SELECT count(*) FROM jobs",
                "SELECT count(*) FROM erasures",
                "CREATE TABLE grafana_was_here (x int)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    grafana.execute(statement)
        # Run again (an existing volume), it sets the password anew and stays a reader.
        assert subprocess.run(["sh", str(script)], env=env, capture_output=True).returncode == 0
        flags = admin.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s",
            (login,),
        ).fetchone()
        assert flags == (False, False, False)
    finally:
        admin.execute(
            psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(login))
        )
        admin.close()
