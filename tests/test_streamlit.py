"""The Streamlit app under streamlit.testing.v1.AppTest, talking to a served API over HTTP."""

from __future__ import annotations

import json

import psycopg
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from assistant.client import AssistantClient
from assistant.config import PROJECT_ROOT
from tests.conftest import free_port, running_api

APP = str(PROJECT_ROOT / "assistant" / "ui" / "streamlit_app.py")
CHARTS = [
    "Conversations per hour (UTC)",
    "Response time p50 / p95 (s)",
    "Answer status mix",
    "+1 / -1",
    "Judged relevance",
    "LLM cost (USD) by model",
    "Tokens by model",
    "Top intents",
]


@pytest.fixture(scope="module")
def api(embedded_server, tmp_path_factory):
    with running_api(embedded_server.get_uri(), tmp_path_factory.mktemp("api")) as served:
        yield served


def _app(monkeypatch, url: str) -> AppTest:
    monkeypatch.setenv("ASSISTANT_URL", url)
    return AppTest.from_file(APP, default_timeout=30).run()


def _ask(app: AppTest, question: str) -> dict:
    app.chat_input[0].set_value(question).run()
    assert not app.exception, app.exception
    return app.session_state["history"][-1]["body"]


def _feedback(database_url: str, conversation_id: str):
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT feedback FROM feedback WHERE conversation_id = %s", (conversation_id,)
        ).fetchone()


def test_a_question_renders_its_answer_sources_and_status(api, monkeypatch):
    app = _app(monkeypatch, api.url)
    assert "extractive:extractive · 70 documents (demo)" in [c.value for c in app.sidebar.caption]
    body = _ask(app, "how do I cancel my subscription?")
    user, assistant = app.chat_message
    assert (user.name, user.markdown[0].value) == ("user", "how do I cancel my subscription?")
    assert assistant.name == "assistant"
    assert assistant.markdown[0].value == body["answer"] and "Cancel" in body["answer"]
    caption = assistant.caption[0].value
    assert caption.startswith("answered · intent cancel-subscription · confidence ")
    expander = assistant.expander[0]
    assert expander.label == f"Sources ({len(body['sources'])})" and body["sources"]
    assert body["sources"][0]["question"] in expander.markdown[0].value
    assert len(assistant.feedback) == 1


def test_thumbs_store_feedback_and_the_session_is_kept(api, monkeypatch):
    app = _app(monkeypatch, api.url)
    first = _ask(app, "my card was charged twice")
    second = _ask(app, "what payment methods do you accept?")
    assert first["session_id"] == second["session_id"]
    assert len(app.feedback) == 2

    app.feedback[0].set_value(0).run()  # thumbs down on the first answer
    assert _feedback(api.database_url, first["conversation_id"]) == (-1,)
    assert [toast.value for toast in app.toast] == ["Thanks for your feedback!"]
    # The confirmation also stays under the thumbs once the toast has gone.
    assert "Thanks for your feedback!" in [c.value for c in app.chat_message[1].caption]
    app.feedback[0].set_value(1).run()  # changed their mind: the latest vote wins
    assert _feedback(api.database_url, first["conversation_id"]) == (1,)
    assert _feedback(api.database_url, second["conversation_id"]) is None


def _chart_rows(chart) -> list[dict]:
    (dataset,) = chart.proto.datasets
    return pa.ipc.open_stream(dataset.data.data).read_all().to_pylist()


def test_monitoring_page_charts_the_stats(api, monkeypatch):
    with AssistantClient(api.url) as client:
        client.question("I forgot my password")
        client.question("what is the capital of France?")
        stats = client.stats()
    app = _app(monkeypatch, api.url)
    app.switch_page("pages/monitoring.py").run()
    assert not app.exception, app.exception
    assert [header.value for header in app.subheader] == [*CHARTS, "Knowledge gaps"]
    metrics = {metric.label: metric.value for metric in app.metric}
    with psycopg.connect(api.database_url) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM conversations").fetchone()
    assert metrics["Conversations"] == str(stats["conversations"]) == str(stored)
    p95 = stats["response_time"]["p95"]
    assert metrics["Response time p95"] == (f"{p95 * 1000:.0f} ms" if p95 < 1 else f"{p95:.2f} s")

    # Extractive answers cost nothing and spend no tokens: notes, not two empty charts.
    notes = [caption.value for caption in app.caption]
    assert any(note.startswith("No LLM cost yet: answers are extractive") for note in notes)
    assert any(note.startswith("No LLM tokens yet") for note in notes)
    charts = app.get("vega_lite_chart")
    assert len(charts) == len(CHARTS) - 2
    volume, _, status_mix, *_, top_intents = (_chart_rows(chart) for chart in charts)
    assert sum(row["conversations"] for row in volume) == stored
    assert {json.dumps(row, sort_keys=True, default=str) for row in status_mix} == {
        json.dumps({"status": r["status"], "conversations": r["conversations"]}, sort_keys=True)
        for r in stats["status_mix"]
    }
    assert {"out_of_scope", "answered"} <= {row["status"] for row in status_mix}
    assert {row["intent"] for row in top_intents} == {r["intent"] for r in stats["top_intents"]}
    # The declined question is one of the knowledge base's gaps, as /stats counts them.
    (gaps,) = app.dataframe
    shown = gaps.value[["question", "times", "declined"]].to_dict("records")
    assert shown == [
        {key: gap[key] for key in ("question", "times", "declined")}
        for gap in stats["knowledge_gaps"]
    ]
    assert {"question": "what is the capital of France?", "times": 1, "declined": 1} in shown
    for label, figure in (("CSAT", "csat"), ("Handoff rate", "handoff_rate")):
        share = stats[figure]
        assert metrics[label] == ("–" if share is None else f"{share:.0%}")


def test_an_unreachable_api_is_shown_not_raised(monkeypatch):
    app = _app(monkeypatch, f"http://127.0.0.1:{free_port()}")
    assert not app.exception
    assert "no API at" in app.sidebar.error[0].value
    app.chat_input[0].set_value("hello?").run()
    assert not app.exception
    assert (
        app.chat_message[-1].markdown[0].value.startswith(":material/error: No answer: no API at")
    )
    app.switch_page("pages/monitoring.py").run()
    assert any("No figures: no API at" in error.value for error in app.error)
