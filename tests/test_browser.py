"""The UIs in a real browser: headless Chromium, driven over the DevTools protocol, uses the
Streamlit and Gradio apps against a served API, and shows the CLI chat as tmux shows it.

Each test saves a screenshot; with SCREENSHOTS=docs/images they are also written there, which
is how the README's pictures are made.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import sys
import time

import psycopg
import pytest

from assistant.config import PROJECT_ROOT
from assistant.simulate import default_questions, simulate
from tests.browser import CHROMIUM, Browser
from tests.conftest import free_port, running_api, started

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)"
)


@pytest.fixture(scope="module")
def api(embedded_server, tmp_path_factory):
    with running_api(embedded_server.get_uri(), tmp_path_factory.mktemp("api")) as served:
        # Demo traffic, as `assistant simulate` sends it, so the monitoring page has figures.
        questions = default_questions(PROJECT_ROOT / "data" / "demo-kb.csv")
        tally = simulate(served.url, questions, 80, feedback_rate=0.4, seed=3, progress=False)
        assert tally.errors == 0, tally.summary()
        yield served


@pytest.fixture(scope="module")
def streamlit_url(api, tmp_path_factory):
    port = free_port()
    app = PROJECT_ROOT / "assistant" / "ui" / "streamlit_app.py"
    command = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    env = {**os.environ, "ASSISTANT_URL": api.url}
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with started(command, env, f"{url}/_stcore/health", log):
        yield url


@pytest.fixture(scope="module")
def gradio_url(api, tmp_path_factory):
    port = free_port()
    env = {
        **os.environ,
        "ASSISTANT_URL": api.url,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gradio") / "gradio.log"
    with started([sys.executable, "-m", "assistant.ui.gradio_app"], env, f"{url}/config", log):
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def _vote_on(database_url: str, question: str, timeout: float = 15):
    """The vote stored on the latest conversation that asked `question`, once it arrives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT f.feedback FROM conversations c JOIN feedback f ON f.conversation_id = c.id"
                " WHERE c.question = %s ORDER BY c.timestamp DESC LIMIT 1",
                (question,),
            ).fetchone()
        if row:
            return row[0]
        time.sleep(0.25)
    return None


def _assert_reads_well(text: str) -> None:
    """No missing value shown as None, no empty source box."""
    assert "None" not in text, text
    assert "Sources (0)" not in text, text


def test_streamlit_chat(browser, streamlit_url, api, tmp_path):
    question = "How do I cancel my subscription?"
    browser.open(streamlit_url, height=1150)
    chat_input = '[data-testid="stChatInputTextArea"]'
    thumbs_up = '[data-testid="stFeedbackButton"][aria-label="Thumbs up"]'
    browser.wait_for(f"!!document.querySelector('{chat_input}')", "chat input")
    # Small talk first: it has no intent and no sources, and must not show them as empty.
    browser.type_and_enter(chat_input, "hi")
    browser.wait_for(f"document.querySelectorAll('{thumbs_up}').length == 1", "the reply's thumbs")
    browser.type_and_enter(chat_input, question)
    browser.wait_for(f"document.querySelectorAll('{thumbs_up}').length == 2", "the answer's thumbs")
    text = browser.evaluate("document.body.innerText")
    assert "Sources (5)" in text and "intent cancel-subscription" in text
    _assert_reads_well(text)
    browser.click(thumbs_up, last=True)
    assert _vote_on(api.database_url, question) == 1
    # The confirmation stays under the thumbs, not only in a toast that fades.
    browser.wait_for(
        "document.querySelectorAll('[data-testid=\"stCaptionContainer\"]').length &&"
        " Array.from(document.querySelectorAll('[data-testid=\"stCaptionContainer\"]'))"
        ".some(e => e.innerText.includes('Thanks for your feedback'))",
        "the vote's confirmation",
    )
    assert browser.foreign_requests() == []
    browser.click('[data-testid="stExpander"] summary')
    browser.wait_for("document.body.innerText.includes('score ')", "the sources, unfolded")
    time.sleep(1)  # the expander's unfolding animation
    browser.screenshot("streamlit-chat.png", tmp_path)


def test_streamlit_monitoring(browser, streamlit_url, tmp_path):
    browser.open(f"{streamlit_url}/monitoring", height=2350)
    browser.wait_for(
        "document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] svg').length >= 6",
        "six drawn charts",
    )
    text = browser.evaluate("document.body.innerText")
    for title in ("Conversations per hour (UTC)", "Response time p50 / p95 (s)", "Top intents"):
        assert title in text
    # The API answers extractively: a note instead of the cost and token charts' empty axes.
    assert "No LLM cost yet: answers are extractive" in text
    assert "No LLM tokens yet" in text
    assert (
        browser.evaluate(
            "document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] svg').length"
        )
        == 6
    )
    time.sleep(1)  # let the charts finish their entry animation
    browser.screenshot("streamlit-monitoring.png", tmp_path)


def test_gradio_chat(browser, gradio_url, api, tmp_path):
    question = "My card was charged twice this month"
    browser.open(gradio_url, height=1150)
    browser.wait_for("!!document.querySelector('textarea')", "message box")
    browser.type_and_enter("textarea", "hi")
    browser.wait_for("document.body.innerText.includes('small_talk')", "the small-talk reply")
    # The box takes input again once Gradio has finished the reply's event.
    browser.wait_for(
        "!document.querySelector('textarea').disabled && !document.querySelector('.generating')",
        "the message box, free again",
    )
    time.sleep(1)
    browser.type_and_enter("textarea", question)
    browser.wait_for("document.body.innerText.includes('Sources (5)')", "answer with sources")
    text = browser.evaluate("document.body.innerText")
    assert "intent double-charge" in text
    _assert_reads_well(text)
    # One font in the title: the page's own, with nothing fetched from another host.
    fonts = browser.evaluate(
        "Array.from(document.querySelectorAll('h1, h1 *')).map(e => getComputedStyle(e).fontFamily)"
    )
    assert fonts and len(set(fonts)) == 1 and fonts[0].startswith("ui-sans-serif"), fonts
    assert browser.foreign_requests() == []
    browser.click('button[aria-label="Like"]', last=True)
    assert _vote_on(api.database_url, question) == 1
    browser.click("details summary")
    time.sleep(1)  # the chat scrolls to its end
    browser.screenshot("gradio-chat.png", tmp_path)


TERMINAL = """<!doctype html><meta charset="utf-8"><style>
body {{ margin: 0; background: #1e1e2e; }}
pre {{ margin: 0; padding: 18px 22px; color: #e0e0e8; font: 15px/1.4 "DejaVu Sans Mono"; }}
</style><pre>{screen}</pre>"""


def test_cli_chat_in_a_terminal(browser, api, tmp_path):
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    question = "my card was charged twice"
    tmux = ["tmux", "-L", f"msa-test-{os.getpid()}"]
    chat = ["env", "PROMPT_TOOLKIT_NO_CPR=1", sys.executable, "-m", "assistant", "chat", "--url"]
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "112", "-y", "30", *chat, api.url], check=True
    )
    try:

        def screen() -> str:
            shown = subprocess.run(
                [*tmux, "capture-pane", "-p"], capture_output=True, text=True, check=True
            )
            return shown.stdout

        def wait_for(text: str) -> None:
            deadline = time.monotonic() + 30
            while text not in screen():
                assert time.monotonic() < deadline, f"no {text!r} on screen:\n{screen()}"
                time.sleep(0.2)

        wait_for("You:")
        subprocess.run([*tmux, "send-keys", "-l", question], check=True)
        subprocess.run([*tmux, "send-keys", "Enter"], check=True)
        wait_for("Was this answer helpful?")
        # The menu starts on "skip"; one step down is "+1".
        subprocess.run([*tmux, "send-keys", "Down", "Enter"], check=True)
        wait_for("feedback +1 saved")
        assert _vote_on(api.database_url, question) == 1
        page = tmp_path / "terminal.html"
        page.write_text(TERMINAL.format(screen=html.escape(screen().rstrip())), encoding="utf-8")
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    browser.open(page.as_uri(), width=1100, height=680)
    browser.wait_for("document.body.innerText.includes('feedback +1 saved')", "the terminal")
    browser.screenshot("cli-chat.png", tmp_path)
