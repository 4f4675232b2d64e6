"""`assistant gaps` on a real PostgreSQL seeded with conversations: paraphrases of one missing
topic land in one group, counted, most frequent first, with the retrieval's own encoder
(WordLlama); answered questions, upvoted ones and old ones are left out."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg

from assistant.db import Database
from assistant.gaps import find_gaps
from assistant.retrieval.encoders import WordLlamaEncoder

OFFLINE = [
    "can I download episodes to watch on a plane?",
    "how do I watch shows offline without internet",
    "is offline viewing available on the app?",
    "Can I save movies to my phone for offline viewing?",
]
STUDENTS = [
    "do you have a student discount?",
    "is there a discount for students",
    "Are there cheaper plans for university students?",
]


def _seed(database: Database) -> None:
    now = datetime.now(UTC)
    rows = []

    def add(
        question: str,
        status: str,
        minutes_ago: float,
        reason: str | None = None,
        intent: str | None = None,
    ) -> str:
        number = len(rows)
        rows.append(
            {
                "id": f"gap-{number}",
                "session_id": f"s-{number}",
                "question": question,
                "answer": "…",
                "model_used": "extractive",
                "status": status,
                "handoff_reason": reason,
                "intent": intent,
                "response_time": 0.1,
                "fallback": False,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "total_tokens": 0,
                "cost_usd": 0.0,
                "timestamp": now - timedelta(minutes=minutes_ago),
            }
        )
        return rows[-1]["id"]

    # The nearest entry of most of the group's declines stands for it.
    for i, question in enumerate(OFFLINE):
        add(question, "out_of_scope", 60 + i, intent="watch-on-plane" if i else "data-usage")
    add(OFFLINE[0], "out_of_scope", 30)  # asked twice in the same words
    add(STUDENTS[0], "handoff", 50, "low_confidence")
    add(STUDENTS[1], "handoff", 40, "low_confidence")
    down = add(STUDENTS[2], "answered", 45)
    add("what's the weather in Paris?", "out_of_scope", 20)
    # Not gaps: answered (one upvoted), handed off on request, and a decline before --since.
    up = add("how do I reset my password", "answered", 10)
    add("how do I cancel my subscription", "answered", 10)
    add("I want to talk to a person", "handoff", 10, "requested_human")
    add("do you sell offline download passes?", "out_of_scope", 60 * 24 * 3)
    database.save_conversations(rows)
    assert database.save_feedback(down, -1, None)
    assert database.save_feedback(up, 1, None)


def test_paraphrases_of_a_missing_topic_are_one_group(own_database):
    _seed(own_database)
    rows = own_database.gap_questions(datetime.now(UTC) - timedelta(days=1))
    assert len(rows) == 9

    gaps = find_gaps(rows, WordLlamaEncoder())

    assert [gap.count for gap in gaps] == [5, 3, 1]
    offline, students, weather = gaps
    assert offline.question == OFFLINE[0]  # the most asked wording stands for the group
    assert offline.reasons == {"declined": 5, "low_confidence": 0, "voted_down": 0}
    assert set(offline.examples) <= set(OFFLINE) and len(offline.examples) == 3
    assert students.reasons == {"declined": 0, "low_confidence": 2, "voted_down": 1}
    assert weather.examples == ["what's the weather in Paris?"]
    assert (offline.nearest, students.nearest, weather.nearest) == ("watch-on-plane", "", "")


def test_without_an_encoder_only_identical_wordings_are_grouped(own_database):
    _seed(own_database)
    rows = own_database.gap_questions(datetime.now(UTC) - timedelta(days=1))
    gaps = find_gaps(rows, None)
    assert gaps[0].count == 2 and gaps[0].question == OFFLINE[0]
    assert len(gaps) == 8


def test_the_command_prints_the_groups_and_writes_the_csv(own_database, tmp_path):
    _seed(own_database)
    out = tmp_path / "gaps.csv"
    env = {**os.environ, "DATABASE_URL": own_database.url, "DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "assistant", "gaps", "--since", "1d", "--csv", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("9 failed questions in 3 groups since")
    assert "declined 6, low confidence 2, voted down 1" in lines[0]
    assert lines[1].split()[0] == "5" and OFFLINE[0] in lines[1]
    with out.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(r["rank"], r["count"], r["declined"]) for r in table] == [
        ("1", "5", "5"),
        ("2", "3", "0"),
        ("3", "1", "1"),
    ]
    assert table[1]["low_confidence"] == "2" and table[1]["voted_down"] == "1"
    assert "nearest watch-on-plane]" in lines[1]
    assert [r["nearest"] for r in table] == ["watch-on-plane", "", ""]
    # Since an ISO date three days back, the old decline joins the offline group.
    since = (datetime.now(UTC) - timedelta(days=4)).date().isoformat()
    wider = subprocess.run(
        [sys.executable, "-m", "assistant", "gaps", "--since", since],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wider.returncode == 0, wider.stderr
    assert wider.stdout.splitlines()[1].split()[0] == "6"


def test_a_since_that_is_neither_an_age_nor_a_date_is_refused(own_database, tmp_path):
    env = {**os.environ, "DATABASE_URL": own_database.url, "DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "assistant", "gaps", "--since", "last tuesday"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "neither an age" in done.stderr
    with psycopg.connect(own_database.url) as conn:
        assert conn.execute("SELECT count(*) FROM conversations").fetchone()[0] == 0
