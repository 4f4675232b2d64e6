"""The Grafana dashboard: its JSON, and every panel's SQL run against real PostgreSQL.

Grafana's macros are expanded here the way its PostgreSQL datasource expands them, the seeded
rows are known, and each panel's result is checked against what Python computes from them.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest
import yaml
from click.testing import CliRunner
from psycopg.rows import dict_row

from assistant.cli import main
from assistant.config import PROJECT_ROOT
from assistant.db import Database
from assistant.judge import HEURISTIC
from tests.conftest import _drop_scratch, _scratch_database

DASHBOARD = PROJECT_ROOT / "grafana" / "dashboards" / "media-support-assistant.json"
DATASOURCES = PROJECT_ROOT / "grafana" / "provisioning" / "datasources" / "postgres.yaml"
ORIGINAL_PANELS = {
    "Last 5 conversations": "table",
    "+1/-1": "piechart",
    "Relevancy": "gauge",
    "Tokens": "timeseries",
    "Model used": "barchart",
    "Response time": "timeseries",
}
INTERVAL = "5m"
STEP = 300


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict | None = None) -> list[dict]:
    return [p for p in (dashboard or _dashboard())["panels"] if p["type"] != "row"]


# --- Grafana's macro expansion (pkg/tsdb/grafana-postgresql-datasource/macros.go) -------------

_MACRO = re.compile(r"\$(__\w+)\(([^)]*)\)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _grafana_time(moment: datetime) -> str:
    """RFC 3339 in UTC with trailing fractional zeros dropped, as Go's RFC3339Nano writes it."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return f"'{text}Z'"


def _seconds(interval: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", interval.strip().strip("'"))
    if not match:
        raise ValueError(f"error parsing interval {interval}")
    return int(match.group(1)) * _UNITS[match.group(2)]


_VARIABLE = re.compile(r"\$\{(\w+):sqlstring\}")


def expand(
    sql: str, start: datetime, end: datetime, interval: str, variables: dict | None = None
) -> str:
    # The front end substitutes $__interval and the dashboard's variables before the backend
    # sees the macros; `sqlstring` quotes a value and doubles its single quotes.
    values = {"judge": "all", **(variables or {})}
    sql = _VARIABLE.sub(lambda m: "'" + values[m.group(1)].replace("'", "''") + "'", sql)
    sql = sql.replace("$__interval_ms", str(int(_seconds(interval) * 1000)))
    sql = sql.replace("$__interval", interval)

    def macro(match: re.Match) -> str:
        name, args = match.group(1), [a.strip() for a in match.group(2).split(",")]
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN {_grafana_time(start)} AND {_grafana_time(end)}"
        if name == "__timeFrom":
            return _grafana_time(start)
        if name == "__timeTo":
            return _grafana_time(end)
        if name in ("__timeGroup", "__timeGroupAlias"):
            if len(args) < 2:
                raise ValueError(f"macro {name} needs time column and interval")
            # Go's %v of a float64: the same digits as %g for every interval Grafana picks.
            step = f"{_seconds(args[1]):g}"
            group = f"floor(extract(epoch from {args[0]})/{step})*{step}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        raise ValueError(f"undefined macro: ${name}")

    return _MACRO.sub(macro, sql)


def test_macros_expand_as_grafana_documents_them():
    start = datetime(2017, 4, 21, 5, 1, 17, tzinfo=UTC)
    end = datetime(2017, 4, 21, 8, 6, 17, 500000, tzinfo=ZoneInfo("Europe/Istanbul"))
    sql = (
        "SELECT $__timeGroupAlias(ts, $__interval), $__timeGroup(ts, '1h', 0) FROM t "
        "WHERE $__timeFilter(ts) AND ts > $__timeFrom() AND ts < $__timeTo()"
    )
    assert expand(sql, start, end, "5m") == (
        'SELECT floor(extract(epoch from ts)/300)*300 AS "time", '
        "floor(extract(epoch from ts)/3600)*3600 FROM t "
        "WHERE ts BETWEEN '2017-04-21T05:01:17Z' AND '2017-04-21T05:06:17.5Z' "
        "AND ts > '2017-04-21T05:01:17Z' AND ts < '2017-04-21T05:06:17.5Z'"
    )
    with pytest.raises(ValueError, match="undefined macro"):
        expand("SELECT $__unixEpochNano()", start, end, "5m")
    assert expand("x = ${judge:sqlstring}", start, end, "5m", {"judge": "o'k"}) == "x = 'o''k'"


# --- the dashboard's JSON --------------------------------------------------------------------


def test_panel_ids_are_unique():
    ids = [p["id"] for p in _dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_every_target_uses_the_provisioned_datasource():
    provisioned = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    uid, kind = provisioned[0]["uid"], provisioned[0]["type"]
    for panel in _panels():
        assert panel["targets"], panel["title"]
        for source in [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]:
            assert source == {"type": kind, "uid": uid}, panel["title"]


def test_grid_positions_do_not_overlap():
    cells: dict[tuple[int, int], str] = {}
    for panel in _dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_original_panels_are_present_with_their_visualisations():
    kinds = {p["title"]: p["type"] for p in _panels()}
    assert {title: kinds.get(title) for title in ORIGINAL_PANELS} == ORIGINAL_PANELS


def test_rows_read_volume_quality_cost_details_with_enough_panels():
    dashboard = _dashboard()
    rows = sorted(
        (p for p in dashboard["panels"] if p["type"] == "row"), key=lambda p: p["gridPos"]["y"]
    )
    assert [r["title"].split(":")[0] for r in rows] == ["Volume", "Quality", "Cost", "Details"]
    assert len(_panels(dashboard)) >= 14


def test_every_query_is_raw_sql_filtered_by_the_dashboard_time_range():
    for panel in _panels():
        for target in panel["targets"]:
            assert target["rawQuery"] and target["editorMode"] == "code", panel["title"]
            assert "$__timeFilter(" in target["rawSql"], panel["title"]
            expected = "time_series" if panel["type"] == "timeseries" else "table"
            assert target["format"] == expected, panel["title"]


# --- seeded data -------------------------------------------------------------------------------

INTENTS = [f"intent_{chr(ord('a') + k)}" for k in range(12)]
MODELS = {"gpt-4o-mini": 0.6e-6, "phi3": 0.0, "extractive": 0.0}
LABELS = ["RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT", "PENDING"]
# The verdicts' sources the service writes (`judge.py`): the dashboard's selector offers each.
JUDGES = ("llm", "heuristic")
REASONS = ["low_confidence", "asked_for_a_person", "account_specific", None]
GAP_REASONS = ("declined", "low_confidence", "voted_down")


@dataclass
class Seed:
    start: datetime
    end: datetime
    conversations: list[dict] = field(default_factory=list)
    feedback: dict[str, dict] = field(default_factory=dict)

    @property
    def in_range(self) -> list[dict]:
        return [c for c in self.conversations if self.start <= c["timestamp"] <= self.end]

    @property
    def votes_in_range(self) -> list[dict]:
        return [f for f in self.feedback.values() if self.start <= f["timestamp"] <= self.end]

    def vote(self, conversation: dict) -> int | None:
        found = self.feedback.get(conversation["id"])
        return found["feedback"] if found else None


def _conversation(rng: random.Random, number: int, moment: datetime, status: str, intent):
    model = rng.choice(list(MODELS))
    prompt, completion = (0, 0) if model == "extractive" else (rng.randint(200, 900), 80)
    relevance = rng.choice(LABELS)
    source = None if relevance == "PENDING" else rng.choice(JUDGES)
    return {
        "id": f"dash-{number:04d}",
        # Sessions of about eight conversations over the range: some follow each other within
        # the resolution rate's 10 minutes.
        "session_id": f"session-{number % 25}",
        "question": f"question {number}",
        "answer": f"answer {number}",
        "model_used": model,
        "intent": intent,
        "status": status,
        "handoff_reason": rng.choice(REASONS) if status == "handoff" else None,
        "fallback": status == "answered" and rng.random() < 0.25,
        "response_time": round(rng.uniform(0.05, 4.0), 4),
        "relevance": relevance,
        "relevance_source": source,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "eval_total_tokens": 0 if relevance == "PENDING" else rng.randint(100, 300),
        "cost_usd": (prompt + completion) * MODELS[model],
        # A non-UTC zone on the way in: what is stored must still be the same instant.
        "timestamp": moment.astimezone(ZoneInfo("Asia/Tokyo")),
    }


def make_seed(end: datetime) -> Seed:
    rng = random.Random(1234)
    seed = Seed(start=end - timedelta(hours=6), end=end)

    def moment() -> datetime:
        return end - timedelta(minutes=rng.uniform(10, 350))

    # Distinct counts per intent, so "top intents" has one right answer whatever the collation.
    for k, intent in enumerate(INTENTS):
        for _ in range(2 * (k + 2)):
            status = rng.choices(["answered", "handoff", "small_talk"], [6, 3, 1])[0]
            seed.conversations.append(
                _conversation(rng, len(seed.conversations), moment(), status, intent)
            )
    # Contacts given after a handoff, a minute after a handoff or an answer of the session: no
    # question that follows an answer up, and no handoff of their own.
    for status in ("handoff", "answered"):
        for earlier in [c for c in seed.conversations if c["status"] == status][:3]:
            when = earlier["timestamp"] + timedelta(minutes=1)
            contact = _conversation(rng, len(seed.conversations), when, "contact", None)
            contact["session_id"] = earlier["session_id"]
            seed.conversations.append(contact)
    for k in range(30):
        intent = rng.choice([INTENTS[0], None])
        declined = _conversation(rng, len(seed.conversations), moment(), "out_of_scope", intent)
        # Missing topics asked again, in other case and spacing: one gap each.
        declined["question"] = [" Offline viewing?", "offline VIEWING?", "Student plan?"][k % 3]
        seed.conversations.append(declined)
    # Outside the range, and of every kind, so a panel that forgets the time filter is caught.
    for days in (-2, -3, 1):
        for status in ("answered", "handoff", "small_talk", "out_of_scope"):
            when = end + timedelta(days=days, minutes=rng.uniform(0, 60))
            seed.conversations.append(
                _conversation(rng, len(seed.conversations), when, status, INTENTS[-1])
            )
    for conversation in seed.conversations:
        if rng.random() < 0.5:
            seed.feedback[conversation["id"]] = {
                "conversation_id": conversation["id"],
                "feedback": rng.choice([1, 1, 1, -1]),
                "timestamp": conversation["timestamp"] + timedelta(minutes=rng.uniform(1, 5)),
            }
    return seed


@pytest.fixture(scope="module")
def seeded(database_url):
    """A dedicated database with the project's migrations and the seed, so counts are exact."""
    name, url = _scratch_database(database_url)
    Database(url, PROJECT_ROOT / "initdb").migrate()
    seed = make_seed(datetime.now(UTC).replace(microsecond=0))
    columns = list(seed.conversations[0])
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'America/New_York'")
        with conn.cursor() as cursor:
            cursor.executemany(
                psycopg.sql.SQL("INSERT INTO conversations ({}) VALUES ({})").format(
                    psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, columns)),
                    psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder(c) for c in columns),
                ),
                seed.conversations,
            )
            cursor.executemany(
                "INSERT INTO feedback (conversation_id, feedback, timestamp)"
                " VALUES (%(conversation_id)s, %(feedback)s, %(timestamp)s)",
                list(seed.feedback.values()),
            )
    yield url, seed
    _drop_scratch(database_url, name)


def run_panel(
    url: str, panel: dict, seed: Seed, judge: str = "all"
) -> tuple[list[str], list[dict]]:
    sql = expand(panel["targets"][0]["rawSql"], seed.start, seed.end, INTERVAL, {"judge": judge})
    with psycopg.connect(url, row_factory=dict_row) as conn:
        # Grafana's session may be in any zone; a half-hour offset exposes local-time bucketing.
        conn.execute("SET TIME ZONE 'Asia/Kolkata'")
        cursor = conn.execute(sql)
        return [column.name for column in cursor.description], cursor.fetchall()


# --- what each panel must return -----------------------------------------------------------


def _bucket(moment: datetime) -> int:
    return math.floor(moment.timestamp() / STEP) * STEP


def _number(value) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _epoch(value) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _percentile(values: list[float], share: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _by_bucket(items: list[dict]) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = defaultdict(list)
    for item in items:
        groups[_bucket(item["timestamp"])].append(item)
    return groups


def _status(conversation: dict) -> str:
    return "fallback" if conversation["fallback"] else conversation["status"]


def check_conversations_per_interval(rows, seed):
    expected = {b: len(items) for b, items in _by_bucket(seed.in_range).items()}
    assert {int(r["time"]): r["conversations"] for r in rows} == expected


def check_response_time(rows, seed):
    ordered = sorted(seed.in_range, key=lambda c: c["timestamp"])
    assert [(r["time"], r["response_time"]) for r in rows] == [
        (c["timestamp"], c["response_time"]) for c in ordered
    ]


def check_response_time_percentiles(rows, seed):
    expected = {
        b: (
            pytest.approx(_percentile([c["response_time"] for c in items], 0.5)),
            pytest.approx(_percentile([c["response_time"] for c in items], 0.95)),
        )
        for b, items in _by_bucket(seed.in_range).items()
    }
    assert {int(r["time"]): (r["p50"], r["p95"]) for r in rows} == expected


# Left out of the outcome panels: small talk, and contacts given after a handoff.
NOT_QUESTIONS = ("small_talk", "contact")


def _followed_up(conversation: dict, seed: Seed) -> bool:
    """Another message of the session, neither small talk nor a contact, within 10 minutes
    after this one."""
    return any(
        other["session_id"] == conversation["session_id"]
        and timedelta(0) < other["timestamp"] - conversation["timestamp"] <= timedelta(minutes=10)
        and other["status"] not in NOT_QUESTIONS
        for other in seed.conversations
    )


def check_resolution_rate(rows, seed):
    support = [c for c in seed.in_range if c["status"] not in NOT_QUESTIONS]
    resolved = [
        c
        for c in support
        if c["status"] == "answered" and seed.vote(c) != -1 and not _followed_up(c, seed)
    ]
    followed = [c for c in support if c["status"] == "answered" and _followed_up(c, seed)]
    assert followed, "the seed must hold answers followed by another question"
    assert len(rows) == 1
    assert float(rows[0]["resolution_rate"]) == pytest.approx(len(resolved) / len(support))


def check_handoff_rate(rows, seed):
    support = [c for c in seed.in_range if c["status"] not in NOT_QUESTIONS]
    reasons = Counter(
        c["handoff_reason"] or "unspecified" for c in support if c["status"] == "handoff"
    )
    assert {r["handoff_reason"]: r["handoff_rate"] for r in rows} == {
        reason: pytest.approx(count / len(support)) for reason, count in reasons.items()
    }


def check_csat(rows, seed):
    votes = [v["feedback"] for v in seed.votes_in_range]
    assert len(rows) == 1
    assert rows[0]["csat"] == pytest.approx(votes.count(1) / len(votes))


def _gap_reason(conversation: dict, seed: Seed) -> str | None:
    if conversation["status"] == "out_of_scope":
        return "declined"
    if conversation["status"] == "handoff" and conversation["handoff_reason"] == "low_confidence":
        return "low_confidence"
    return "voted_down" if seed.vote(conversation) == -1 else None


def check_knowledge_gaps(rows, seed):
    groups: dict[str, list[tuple[dict, str]]] = defaultdict(list)
    for c in seed.in_range:
        reason = _gap_reason(c, seed)
        if reason:
            groups[c["question"].strip().lower()].append((c, reason))
    expected = sorted(
        (
            (
                len(items),
                max(c["timestamp"] for c, _ in items),
                tuple(sum(r == reason for _, r in items) for reason in GAP_REASONS),
            )
            for items in groups.values()
        ),
        key=lambda item: (-item[0], -item[1].timestamp()),
    )[:20]
    got = [(r["times"], r["last_asked"], tuple(r[reason] for reason in GAP_REASONS)) for r in rows]
    assert got == expected
    assert rows[0]["times"] == 20 and rows[0]["question"].strip().lower() == "offline viewing?"


def check_status_mix(rows, seed):
    assert {r["status"]: r["conversations"] for r in rows} == Counter(map(_status, seed.in_range))
    assert {r["status"] for r in rows} == {
        "answered",
        "fallback",
        "out_of_scope",
        "handoff",
        "small_talk",
        "contact",
    }


def check_thumbs(rows, seed):
    votes = Counter(v["feedback"] for v in seed.votes_in_range)
    assert rows == [{"thumbs_up": votes[1], "thumbs_down": votes[-1]}]


def _judged_by(conversation: dict, judge: str) -> bool:
    return judge == "all" or conversation["relevance_source"] == judge


def check_relevancy(rows, seed, judge="all"):
    judged = Counter(
        c["relevance"]
        for c in seed.in_range
        if c["relevance"] != "PENDING" and _judged_by(c, judge)
    )
    total = sum(judged.values())
    assert {r["relevance"]: r["share"] for r in rows} == {
        label: pytest.approx(count / total) for label, count in judged.items()
    }


def check_satisfaction(rows, seed):
    expected = {
        b: pytest.approx(sum(v["feedback"] == 1 for v in votes) / len(votes))
        for b, votes in _by_bucket(seed.votes_in_range).items()
    }
    assert {int(r["time"]): float(r["satisfaction"]) for r in rows} == expected


def check_judged_relevance(rows, seed, judge="all"):
    expected = {}
    for b, items in _by_bucket(seed.in_range).items():
        labels = Counter(
            c["relevance"] for c in items if c["relevance"] == "PENDING" or _judged_by(c, judge)
        )
        expected[b] = tuple(labels[label] for label in LABELS)
    got = {
        int(r["time"]): (r["relevant"], r["partly_relevant"], r["non_relevant"], r["pending"])
        for r in rows
    }
    assert got == expected
    assert sum(counts[3] for counts in got.values()) > 0


def check_cost_by_model(rows, seed):
    expected: dict[tuple[int, str], float] = defaultdict(float)
    for c in seed.in_range:
        expected[(_bucket(c["timestamp"]), c["model_used"])] += c["cost_usd"]
    got = {(int(r["time"]), r["metric"]): r["cost_usd"] for r in rows}
    assert got == {key: pytest.approx(value) for key, value in expected.items()}
    assert {r["metric"] for r in rows} == set(MODELS)


def check_tokens(rows, seed):
    expected = {
        b: (
            sum(c["prompt_tokens"] for c in items),
            sum(c["completion_tokens"] for c in items),
            sum(c["eval_total_tokens"] for c in items),
        )
        for b, items in _by_bucket(seed.in_range).items()
    }
    got = {
        int(r["time"]): (r["prompt_tokens"], r["completion_tokens"], r["judge_tokens"])
        for r in rows
    }
    assert got == expected


def check_tokens_by_model(rows, seed):
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in seed.in_range:
        expected[c["model_used"]][0] += c["prompt_tokens"]
        expected[c["model_used"]][1] += c["completion_tokens"]
    got = {r["model_used"]: [r["prompt_tokens"], r["completion_tokens"]] for r in rows}
    assert got == dict(expected)


def check_model_used(rows, seed):
    expected = Counter(c["model_used"] for c in seed.in_range)
    assert {r["model_used"]: r["conversations"] for r in rows} == expected


def check_last_five(rows, seed):
    latest = sorted(seed.in_range, key=lambda c: c["timestamp"], reverse=True)[:5]
    assert [(r["question"], r["feedback"]) for r in rows] == [
        (c["question"], seed.vote(c)) for c in latest
    ]


def check_top_intents(rows, seed):
    counts: Counter[str] = Counter()
    down: Counter[str] = Counter()
    for c in seed.in_range:
        if c["intent"] is not None and c["status"] != "out_of_scope":
            counts[c["intent"]] += 1
            down[c["intent"]] += seed.vote(c) == -1
    expected = [(intent, n, down[intent]) for intent, n in counts.most_common(10)]
    assert [(r["intent"], r["conversations"], r["thumbs_down"]) for r in rows] == expected


def check_handoff_reasons(rows, seed):
    expected = Counter(
        c["handoff_reason"] or "unspecified" for c in seed.in_range if c["status"] == "handoff"
    )
    assert {r["handoff_reason"]: r["conversations"] for r in rows} == expected
    assert "unspecified" in expected


EXPECTED = {
    "Conversations per interval": (("time", "conversations"), check_conversations_per_interval),
    "Response time": (("time", "response_time"), check_response_time),
    "Response time p50 / p95": (("time", "p50", "p95"), check_response_time_percentiles),
    "Self-service resolution rate": (("resolution_rate",), check_resolution_rate),
    "Answer status mix": (("status", "conversations"), check_status_mix),
    "+1/-1": (("thumbs_up", "thumbs_down"), check_thumbs),
    "Relevancy": (("relevance", "share"), check_relevancy),
    "Satisfaction rate over time": (("time", "satisfaction"), check_satisfaction),
    "Judged relevance over time": (
        ("time", "relevant", "partly_relevant", "non_relevant", "pending"),
        check_judged_relevance,
    ),
    "LLM cost (USD) per interval, by model": (("time", "metric", "cost_usd"), check_cost_by_model),
    "Tokens": (("time", "prompt_tokens", "completion_tokens", "judge_tokens"), check_tokens),
    "Tokens by model": (
        ("model_used", "prompt_tokens", "completion_tokens"),
        check_tokens_by_model,
    ),
    "Model used": (("model_used", "conversations"), check_model_used),
    "Last 5 conversations": (
        (
            "time",
            "question",
            "answer",
            "status",
            "intent",
            "model_used",
            "response_time",
            "relevance",
            "feedback",
        ),
        check_last_five,
    ),
    "Top intents": (("intent", "conversations", "thumbs_down"), check_top_intents),
    "Handoff reasons": (("handoff_reason", "conversations"), check_handoff_reasons),
    "Handoff rate by reason": (("handoff_reason", "handoff_rate"), check_handoff_rate),
    "CSAT": (("csat",), check_csat),
    "Knowledge gaps": (
        ("question", "times", "declined", "low_confidence", "voted_down", "last_asked"),
        check_knowledge_gaps,
    ),
}


def test_every_panel_has_an_expectation():
    assert sorted(p["title"] for p in _panels()) == sorted(EXPECTED)


def check_shape(panel: dict, columns: list[str], rows: list[dict], seed: Seed) -> None:
    """What the panel's visualisation needs from the result, whatever the panel computes."""
    kind, options = panel["type"], panel.get("options", {})
    numeric = [c for c in columns if all(_number(r[c]) for r in rows)]
    if kind == "timeseries":
        assert columns[0] == "time"
        times = [_epoch(r["time"]) for r in rows]
        assert times == sorted(times), "a time series must come in time order"
        assert _bucket(seed.start) <= times[0] and times[-1] <= seed.end.timestamp()
        values = [c for c in columns[1:] if c != "metric"]
        assert values and set(values) <= set(numeric)
        assert all(isinstance(r["metric"], str) for r in rows) if "metric" in columns else True
    elif kind == "barchart":
        x_field = options["xField"]
        assert all(isinstance(r[x_field], str) for r in rows)
        assert set(columns) - {x_field} <= set(numeric) and len(columns) > 1
    elif kind in ("piechart", "gauge", "stat"):
        reduce = options["reduceOptions"]
        if reduce["values"]:
            labels = [c for c in columns if all(isinstance(r[c], str) for r in rows)]
            assert len(labels) == 1, "one text column names each slice or gauge"
        else:
            assert len(rows) == 1 and numeric == columns
        pattern = reduce.get("fields", "").strip("/")
        assert any(re.search(pattern, c) for c in numeric)
    else:
        assert kind == "table"


@pytest.mark.parametrize("title", [p["title"] for p in _panels()])
def test_panel_sql_runs_and_returns_what_its_visualisation_needs(seeded, title):
    url, seed = seeded
    panel = next(p for p in _panels() if p["title"] == title)
    columns, rows = run_panel(url, panel, seed)
    expected_columns, check_values = EXPECTED[title]
    assert tuple(columns) == expected_columns
    assert rows, "the seed covers every panel, so an empty result is a broken query"
    check_shape(panel, columns, rows, seed)
    check_values(rows, seed)


def test_the_judge_selector_offers_every_source_the_service_writes():
    (variable,) = _dashboard()["templating"]["list"]
    assert variable["name"] == "judge" and variable["current"]["value"] == "all"
    assert {o["value"] for o in variable["options"]} == {"all", *JUDGES}
    assert JUDGES == ("llm", HEURISTIC)


@pytest.mark.parametrize("judge", JUDGES)
@pytest.mark.parametrize("title", ["Relevancy", "Judged relevance over time"])
def test_relevance_panels_count_the_chosen_judge_only(seeded, title, judge):
    url, seed = seeded
    panel = next(p for p in _panels() if p["title"] == title)
    _, rows = run_panel(url, panel, seed, judge)
    _, every = run_panel(url, panel, seed)
    assert rows != every, "the seed mixes both judges, so choosing one must change the counts"
    EXPECTED[title][1](rows, seed, judge)


def test_rows_outside_the_time_range_are_left_out(seeded):
    url, seed = seeded
    panel = next(p for p in _panels() if p["title"] == "Model used")
    later = Seed(start=seed.end + timedelta(hours=12), end=seed.end + timedelta(days=2))
    later.conversations = seed.conversations
    _, rows = run_panel(url, panel, later)
    assert sum(r["conversations"] for r in rows) == len(later.in_range) == 4


# --- time zones ---------------------------------------------------------------------------


def _check_time(url: str, tz: str):
    return CliRunner().invoke(
        main, ["db", "check-time"], env={"DATABASE_URL": url, "TZ": tz, "KB_PATH": "demo"}
    )


def test_check_time_prints_each_clock_and_leaves_no_row(fresh_database_url):
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(
            psycopg.sql.SQL("ALTER DATABASE {} SET timezone = 'America/New_York'").format(
                psycopg.sql.Identifier(name)
            )
        )
    result = _check_time(fresh_database_url, "Asia/Kolkata")
    assert result.exit_code == 0, result.output
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    assert lines["database timezone"].strip() == "America/New_York"
    assert lines["python time (Asia/Kolkata)"].strip().endswith("+05:30")
    assert lines["inserted (Asia/Kolkata)"].strip().endswith("+05:30")
    assert lines["selected timestamp"].strip()[-6:] in ("-05:00", "-04:00")
    assert lines["round trip"].strip() == "same instant"
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM conversations").fetchone() == (0,)


def test_check_time_rejects_an_unknown_zone(fresh_database_url):
    result = _check_time(fresh_database_url, "Mars/Olympus_Mons")
    assert result.exit_code != 0
    assert "not a known time zone" in result.output
