"""The Gradio app, served as `python -m assistant.ui.gradio_app` against a served API: a message
gets an answer through Gradio's Python client, and a like, sent the way the browser sends it,
stores feedback in PostgreSQL."""

from __future__ import annotations

import json
import os
import sys
import uuid

import gradio as gr
import psycopg
import pytest
import requests
from gradio_client import Client

from tests.conftest import free_port, running_api, started


@pytest.fixture(scope="module")
def api(embedded_server, tmp_path_factory):
    with running_api(embedded_server.get_uri(), tmp_path_factory.mktemp("api")) as served:
        yield served


def _gradio(api_url: str) -> tuple[list[str], dict[str, str], str]:
    """The command, environment and URL of the Gradio app on a free port."""
    port = free_port()
    env = {
        **os.environ,
        "ASSISTANT_URL": api_url,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    return [sys.executable, "-m", "assistant.ui.gradio_app"], env, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def ui(api, tmp_path_factory):
    directory = tmp_path_factory.mktemp("gradio")
    command, env, url = _gradio(api.url)
    with started(command, env, f"{url}/config", directory / "gradio.log"):
        yield url


def _like(ui: str, history: list[dict], index: int, liked: bool) -> dict:
    """What the browser does on a thumb: join the queue with the chatbot's value and LikeData."""
    config = requests.get(f"{ui}/config", timeout=10).json()
    like = next(d for d in config["dependencies"] if d["api_name"] == "feedback")
    session = uuid.uuid4().hex
    # The chatbot's value as the browser holds it: Gradio's own postprocessed form.
    value = gr.Chatbot().postprocess(history).model_dump()
    joined = requests.post(
        f"{ui}/gradio_api/queue/join",
        json={
            "data": [value],
            "event_data": {"index": index, "value": history[index]["content"], "liked": liked},
            "fn_index": like["id"],
            "trigger_id": like["targets"][0][0],
            "session_hash": session,
        },
        timeout=10,
    )
    assert joined.status_code == 200, joined.text
    with requests.get(
        f"{ui}/gradio_api/queue/data", params={"session_hash": session}, stream=True, timeout=30
    ) as events:
        for line in events.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                message = json.loads(line.removeprefix("data:"))
                if message["msg"] == "process_completed":
                    return message
    raise AssertionError("the like event never completed")


def _feedback(database_url: str, conversation_id: str):
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT feedback FROM feedback WHERE conversation_id = %s", (conversation_id,)
        ).fetchone()


def test_a_message_gets_an_answer_with_its_details(ui, api):
    answer = Client(ui, verbose=False).predict("how do I cancel my subscription?", api_name="/chat")
    conversation_id = answer["metadata"]["id"]
    assert answer["role"] == "assistant"
    assert "Cancel" in answer["content"] and "{{" not in answer["content"]
    assert "answered · intent cancel-subscription · confidence" in answer["content"]
    assert "<summary>Sources (5)</summary>" in answer["content"]
    with psycopg.connect(api.database_url) as conn:
        assert conn.execute(
            "SELECT question, status FROM conversations WHERE id = %s", (conversation_id,)
        ).fetchone() == ("how do I cancel my subscription?", "answered")


def test_like_and_dislike_store_feedback(ui, api):
    question = "my card was charged twice"
    answer = Client(ui, verbose=False).predict(question, api_name="/chat")
    history = [{"role": "user", "content": question}, answer]
    conversation_id = answer["metadata"]["id"]

    done = _like(ui, history, 1, liked=True)
    assert done["success"], done
    assert _feedback(api.database_url, conversation_id) == (1,)
    done = _like(ui, history, 1, liked=False)
    assert done["success"], done
    assert _feedback(api.database_url, conversation_id) == (-1,)


def test_an_unreachable_api_is_an_answer_not_a_crash(tmp_path):
    command, env, url = _gradio(f"http://127.0.0.1:{free_port()}")
    with started(command, env, f"{url}/config", tmp_path / "gradio.log"):
        answer = Client(url, verbose=False).predict("hello?", api_name="/chat")
    assert answer.startswith("No answer: no API at")


def test_a_tabs_questions_share_the_session_the_api_issued(ui, api):
    tab = Client(ui, verbose=False)
    first = tab.predict("how do I cancel my subscription?", api_name="/chat")
    second = tab.predict("and can I get a refund?", api_name="/chat")
    with psycopg.connect(api.database_url) as conn:
        sessions = [
            conn.execute(
                "SELECT session_id FROM conversations WHERE id = %s", (answer["metadata"]["id"],)
            ).fetchone()[0]
            for answer in (first, second)
        ]
    assert sessions[0] == sessions[1]
    # The API's id, not the browser's: Gradio's session hash never reaches the API.
    assert tab.session_hash not in sessions
