"""GET /stats on seeded conversations: every figure equals what the stored rows say, read back
with plain SQL and counted here, on both PostgreSQL servers."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from assistant.db import Database
from tests.conftest import _drop_scratch, _scratch_database

NOW = datetime.now(UTC).replace(microsecond=0)
SINCE = NOW - timedelta(hours=6)
FIELDS = (
    "hours_ago", "status", "fallback", "intent", "model", "seconds", "cost", "prompt",
    "completion", "judge", "relevance", "vote", "voted_hours_ago",
)  # fmt: skip
ROWS = [
    (0.2, "answered", False, "cancel_subscription", "gpt-4o-mini", 1.2, 0.0004, 300, 80, 120,
     "RELEVANT", 1, 0.1),
    (0.5, "answered", True, "cancel_subscription", "extractive", 0.05, 0.0, 0, 0, 0,
     "PENDING", -1, 0.4),
    (1.5, "answered", False, "payment_methods", "gpt-4o-mini", 2.5, 0.0006, 420, 95, 130,
     "PARTLY_RELEVANT", 1, 1.4),
    (1.4, "out_of_scope", False, "watch_history", "extractive", 0.02, 0.0, 0, 0, 0,
     "NON_RELEVANT", -1, 1.35),
    (2.2, "handoff", False, "human_agent", "extractive", 0.03, 0.0, 0, 0, 0,
     "RELEVANT", None, None),
    (5.85, "small_talk", False, None, "extractive", 0.01, 0.0, 0, 0, 0, "PENDING", None, None),
    (3.1, "answered", False, "payment_methods", "llama3.2:1b", 4.0, 0.0, 510, 120, 0,
     "RELEVANT", -1, 3.0),
    (5.9, "answered", False, "cancel_subscription", "gpt-4o-mini", 0.9, 0.0003, 280, 60, 110,
     "UNJUDGED", None, None),
    # Before the window: left out, but its late vote, given inside it, counts as the
    # dashboard's +1/-1 panel counts it.
    (7.0, "answered", False, "cancel_subscription", "gpt-4o-mini", 9.0, 0.0009, 999, 99, 99,
     "RELEVANT", 1, 0.3),
    (30.0, "handoff", False, "human_agent", "extractive", 7.0, 0.0, 0, 0, 0, "PENDING", -1, 29.0),
    # Contacts given after a handoff: c10 after c4's, c11 3 minutes after c0's answer.
    (2.15, "contact", False, None, "none", 0.01, 0.0, 0, 0, 0, "PARTLY_RELEVANT", None, None),
    (0.15, "contact", False, None, "none", 0.01, 0.0, 0, 0, 0, "PENDING", None, None),
]  # fmt: skip
# c3 asks again 6 minutes after c2's answer: c2 is not resolved. c5 thanks c7's answer 3
# minutes later: small talk, c7 still is. c11 gives a contact after c0's answer: no question,
# c0 still is resolved; and c10 is not another handoff after c4.
SESSIONS = {
    "c2": "s-asked-again", "c3": "s-asked-again", "c5": "s-thanks", "c7": "s-thanks",
    "c0": "s-contact", "c11": "s-contact", "c4": "s-handoff", "c10": "s-handoff",
}  # fmt: skip
HANDOFF_REASONS = {"c4": "requested_human", "c9": "frustration"}


def _percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the two nearest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@pytest.fixture(scope="module")
def seeded(database_url, settings, assistant):
    from assistant.app import create_app

    name, url = _scratch_database(database_url)
    database = Database(url, settings.migrations_dir)
    database.migrate()
    with psycopg.connect(url) as conn:
        for n, row in enumerate(ROWS):
            values = dict(zip(FIELDS, row, strict=True))
            values |= {
                "id": f"c{n}",
                "total": values["prompt"] + values["completion"],
                "at": NOW - timedelta(hours=values["hours_ago"]),
                "session": SESSIONS.get(f"c{n}"),
                "reason": HANDOFF_REASONS.get(f"c{n}"),
            }
            conn.execute(
                "INSERT INTO conversations (id, question, answer, model_used, intent, status,"
                " fallback, response_time, cost_usd, prompt_tokens, completion_tokens,"
                " total_tokens, eval_total_tokens, relevance, timestamp, session_id,"
                " handoff_reason) VALUES (%(id)s, 'q', 'a', %(model)s, %(intent)s, %(status)s,"
                " %(fallback)s, %(seconds)s, %(cost)s, %(prompt)s, %(completion)s, %(total)s,"
                " %(judge)s, %(relevance)s, %(at)s, %(session)s, %(reason)s)",
                values,
            )
            if values["vote"] is not None:
                conn.execute(
                    "INSERT INTO feedback (conversation_id, feedback, timestamp)"
                    " VALUES (%s, %s, %s)",
                    (
                        values["id"],
                        values["vote"],
                        NOW - timedelta(hours=values["voted_hours_ago"]),
                    ),
                )
    app = create_app(replace(settings, database_url=url), assistant=assistant, database=database)
    yield app.test_client(), url
    database.close()
    _drop_scratch(database_url, name)


@pytest.fixture(scope="module")
def window(seeded):
    """/stats since SINCE, and the conversations stored since then with their votes."""
    http, url = seeded
    response = http.get("/stats", query_string={"since": SINCE.isoformat()})
    assert response.status_code == 200, response.get_json()
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        rows = conn.execute(
            "SELECT c.*, f.feedback FROM conversations c"
            " LEFT JOIN feedback f ON f.conversation_id = c.id WHERE c.timestamp >= %s",
            (SINCE,),
        ).fetchall()
        votes = conn.execute(
            "SELECT feedback FROM feedback WHERE timestamp >= %s", (SINCE,)
        ).fetchall()
    assert len(rows) == 10
    return response.get_json(), rows, [vote["feedback"] for vote in votes]


def test_totals(window):
    stats, rows, votes = window
    times = [row["response_time"] for row in rows]
    assert datetime.fromisoformat(stats["since"]) == SINCE
    assert stats["conversations"] == len(rows)
    assert stats["response_time"] == {
        "p50": pytest.approx(_percentile_cont(times, 0.5)),
        "p95": pytest.approx(_percentile_cont(times, 0.95)),
        "mean": pytest.approx(sum(times) / len(times)),
    }
    assert stats["cost_usd"] == pytest.approx(sum(row["cost_usd"] for row in rows))
    tokens = {
        "prompt": sum(row["prompt_tokens"] for row in rows),
        "completion": sum(row["completion_tokens"] for row in rows),
        "judge": sum(row["eval_total_tokens"] for row in rows),
    }
    assert stats["tokens"] == {**tokens, "total": sum(tokens.values())}
    assert stats["relevance"] == {
        label: sum(row["relevance"] == label for row in rows)
        for label in ("RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT", "PENDING", "UNJUDGED")
    }
    # Votes count by when they were given: the late +1 on the older conversation is in.
    assert stats["feedback"] == {
        "thumbs_up": votes.count(1),
        "thumbs_down": votes.count(-1),
        "satisfaction": pytest.approx(votes.count(1) / len(votes)),
    }
    assert stats["feedback"]["thumbs_up"] == 3


def test_outcomes(window, seeded):
    """Resolution rate, handoff rate by reason and CSAT, as the README defines them, counted
    here from the rows."""
    stats, rows, votes = window
    with psycopg.connect(seeded[1], row_factory=psycopg.rows.dict_row) as conn:
        everything = conn.execute("SELECT * FROM conversations").fetchall()

    def followed_up(row) -> bool:
        return any(
            other["session_id"] is not None
            and other["session_id"] == row["session_id"]
            and timedelta(0) < other["timestamp"] - row["timestamp"] <= timedelta(minutes=10)
            and other["status"] not in ("small_talk", "contact")
            for other in everything
        )

    # A contact given after a handoff is no support question, as small talk is none.
    support = [row for row in rows if row["status"] not in ("small_talk", "contact")]
    resolved = [
        row
        for row in support
        if row["status"] == "answered" and row["feedback"] != -1 and not followed_up(row)
    ]
    assert {row["id"] for row in resolved} == {"c0", "c7"}
    assert stats["resolution_rate"] == pytest.approx(len(resolved) / len(support))
    handoffs = Counter(row["handoff_reason"] for row in support if row["status"] == "handoff")
    assert stats["handoff_rate"] == pytest.approx(sum(handoffs.values()) / len(support))
    assert sum(handoffs.values()) == 1
    assert stats["handoff_rate_by_reason"] == {
        reason: pytest.approx(count / len(support)) for reason, count in handoffs.items()
    }
    assert stats["csat"] == pytest.approx(votes.count(1) / len(votes))
    # Every seeded question reads 'q': one gap, of the declined and voted-down rows.
    failed = [
        row
        for row in rows
        if row["status"] == "out_of_scope"
        or (row["status"] == "handoff" and row["handoff_reason"] == "low_confidence")
        or row["feedback"] == -1
    ]
    declined = sum(row["status"] == "out_of_scope" for row in failed)
    [gap] = stats["knowledge_gaps"]
    assert gap | {"last_asked": None} == {
        "question": "q",
        "times": len(failed),
        "declined": declined,
        "low_confidence": 0,
        "voted_down": len(failed) - declined,
        "last_asked": None,
    }
    assert datetime.fromisoformat(gap["last_asked"]) == max(row["timestamp"] for row in failed)


def test_hourly(window):
    stats, rows, _ = window
    buckets = defaultdict(list)
    for row in rows:
        hour = row["timestamp"].astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        buckets[hour].append(row)
    expected = []
    for hour, bucket in sorted(buckets.items()):
        times = [row["response_time"] for row in bucket]
        expected.append(
            {
                "hour": hour,
                "conversations": len(bucket),
                "p50": pytest.approx(_percentile_cont(times, 0.5)),
                "p95": pytest.approx(_percentile_cont(times, 0.95)),
                "cost_usd": pytest.approx(sum(row["cost_usd"] for row in bucket)),
            }
        )
    hourly = [{**h, "hour": datetime.fromisoformat(h["hour"])} for h in stats["hourly"]]
    assert hourly == expected


def test_status_mix_models_and_intents(window):
    stats, rows, _ = window
    shown = Counter(
        "fallback" if row["fallback"] and row["status"] == "answered" else row["status"]
        for row in rows
    )
    assert [(row["status"], row["conversations"]) for row in stats["status_mix"]] == sorted(
        shown.items(), key=lambda item: (-item[1], item[0])
    )

    models = defaultdict(list)
    for row in rows:
        models[row["model_used"]].append(row)
    assert {row["model"]: row for row in stats["cost_by_model"]} == {
        model: {
            "model": model,
            "conversations": len(group),
            "cost_usd": pytest.approx(sum(row["cost_usd"] for row in group)),
            "prompt_tokens": sum(row["prompt_tokens"] for row in group),
            "completion_tokens": sum(row["completion_tokens"] for row in group),
            "judge_tokens": sum(row["eval_total_tokens"] for row in group),
        }
        for model, group in models.items()
    }
    assert stats["cost_by_model"][0]["model"] == "gpt-4o-mini"

    asked = [row for row in rows if row["intent"] and row["status"] != "out_of_scope"]
    intents = Counter(row["intent"] for row in asked)
    down = Counter(row["intent"] for row in asked if row["feedback"] == -1)
    assert stats["top_intents"] == [
        {"intent": intent, "conversations": count, "thumbs_down": down[intent]}
        for intent, count in sorted(intents.items(), key=lambda item: (-item[1], item[0]))
    ]


def test_stats_default_to_the_last_24_hours(seeded):
    http, url = seeded
    stats = http.get("/stats").get_json()
    with psycopg.connect(url) as conn:
        (expected,) = conn.execute(
            "SELECT count(*) FROM conversations WHERE timestamp >= now() - interval '24 hours'"
        ).fetchone()
    assert stats["conversations"] == expected == 11
    since = datetime.fromisoformat(stats["since"])
    assert abs(since - (datetime.now(UTC) - timedelta(hours=24))) < timedelta(minutes=1)


def test_a_time_without_zone_is_utc_and_an_empty_window_is_zeros(seeded):
    http, _ = seeded
    naive = http.get("/stats", query_string={"since": SINCE.replace(tzinfo=None).isoformat()})
    zulu = http.get("/stats", query_string={"since": SINCE.isoformat().replace("+00:00", "Z")})
    assert naive.get_json() == zulu.get_json()
    assert naive.get_json()["conversations"] == 10
    empty = http.get("/stats", query_string={"since": (NOW + timedelta(days=1)).isoformat()})
    assert empty.get_json() | {"since": None} == {
        "since": None,
        "conversations": 0,
        "response_time": {"p50": None, "p95": None, "mean": None},
        "resolution_rate": None,
        "handoff_rate": None,
        "handoff_rate_by_reason": {},
        "csat": None,
        "cost_usd": 0,
        "tokens": {"prompt": 0, "completion": 0, "judge": 0, "total": 0},
        "relevance": {
            "RELEVANT": 0,
            "PARTLY_RELEVANT": 0,
            "NON_RELEVANT": 0,
            "PENDING": 0,
            "UNJUDGED": 0,
        },
        "feedback": {"thumbs_up": 0, "thumbs_down": 0, "satisfaction": None},
        "hourly": [],
        "status_mix": [],
        "cost_by_model": [],
        "top_intents": [],
        "knowledge_gaps": [],
    }


@pytest.mark.parametrize("since", ["yesterday", "2025-13-01T00:00:00", "1700000000", ""])
def test_a_bad_since_is_a_json_400(seeded, since):
    response = seeded[0].get("/stats", query_string={"since": since})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request" and "since" in error["message"]
