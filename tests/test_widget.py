"""The website widget in a real browser: headless Chromium loads a demo page served from another
origin (another loopback port) under a strict Content-Security-Policy, with the one-tag widget
of a served API. Through the widget, with the keyboard, it asks a question and sees the
streamed answer with a source link, votes, reloads and finds the conversation, asks for a
person and sees the handoff, which the API's own job thread posts to a helpdesk receiver (a
real HTTP server in this process), and restarts. Every request the page made goes to the
page's own origin or the API's; the policy reports no violation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import psycopg
import pytest

from assistant import handoff
from tests.conftest import running_api, serving
from tests.test_browser import CHROMIUM, Browser
from tests.test_generated_answers import StandIn, _event
from tests.test_handoff import SECRET, Receiver

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)"
)

KEY = "pk_test_widget_demo"
# Records every policy violation where the test can read it: an inline script would itself be
# one, so this is a file of the page's origin.
RECORDER = (
    "window.violations = [];"
    "document.addEventListener('securitypolicyviolation',"
    " e => window.violations.push(e.violatedDirective + ' ' + e.blockedURI));"
)
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Lumen Stream Help</title>
<script src="/recorder.js"></script></head>
<body><h1>Lumen Stream Help Centre</h1>
<p>Answers about plans, billing, devices and your account.</p>
<script src="{api}/widget.js" data-key="{key}" data-title="Lumen Stream support" defer></script>
</body></html>
"""


class DemoSite(ThreadingHTTPServer):
    """A business's own website: the demo page and its recorder script, with a strict CSP that
    allows scripts and requests only from itself and the API."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _DemoHandler)
        self.api = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _DemoHandler(BaseHTTPRequestHandler):
    server: DemoSite

    def log_message(self, *args) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        if self.path == "/recorder.js":
            body, kind = RECORDER.encode(), "text/javascript"
        else:
            body, kind = PAGE.format(api=self.server.api, key=KEY).encode(), "text/html"
        self.send_response(200)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header(
            "Content-Security-Policy",
            f"default-src 'none'; script-src 'self' {self.server.api}; "
            f"connect-src {self.server.api}; style-src 'self'; img-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        )
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def site() -> Iterator[DemoSite]:
    server = DemoSite()
    with serving(server):
        yield server


@pytest.fixture(scope="module")
def helpdesk() -> Iterator[Receiver]:
    """The team's helpdesk webhook: records every handoff posted to it, and accepts it."""
    server = Receiver()
    with serving(server):
        yield server


@pytest.fixture(scope="module")
def widget_api(embedded_server, site, helpdesk, tmp_path_factory):
    directory = tmp_path_factory.mktemp("widget-api")
    with running_api(
        embedded_server.get_uri(),
        directory,
        PUBLISHABLE_KEYS=KEY,
        CORS_ORIGINS=site.url,
        HANDOFF_WEBHOOK_URL=helpdesk.url,
        HANDOFF_WEBHOOK_SECRET=SECRET,
    ) as served:
        site.api = served.url
        yield served


class RecordingBrowser(Browser):
    """Chromium that records the URL of every request the page sends (DevTools' Network
    domain): fetches, scripts, preflights, failed ones too."""

    def __init__(self, profile):
        super().__init__(profile)
        self.requests: list[str] = []
        self.send("Network.enable")

    def send(self, method: str, **params) -> dict:
        call = next(self.ids)
        self.ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("method") == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
            if message.get("id") == call:
                assert "error" not in message, f"{method}: {message['error']}"
                return message.get("result", {})


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = RecordingBrowser(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def _in_widget(expression: str) -> str:
    """`expression` evaluated with `w`, the widget's shadow root."""
    return (
        "(() => { const host = document.querySelector('#msa-widget');"
        " if (!host || !host.shadowRoot) return null; const w = host.shadowRoot;"
        f" return {expression}; }})()"
    )


def _messages(browser: Browser) -> list[dict]:
    return browser.evaluate(
        _in_widget(
            "Array.from(w.querySelectorAll('.msg')).map(m => ({"
            " kind: m.className, text: m.querySelector('.text').textContent,"
            " links: Array.from(m.querySelectorAll('.sources a')).map(a => a.href)}))"
        )
    )


def _stored(url: str) -> list[dict]:
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT c.id, c.session_id, c.status, c.handoff_reason, f.feedback"
            " FROM conversations c LEFT JOIN feedback f ON f.conversation_id = c.id"
            " ORDER BY c.timestamp"
        ).fetchall()


def test_the_widget_on_another_origin_answers_votes_survives_a_reload_and_hands_off(
    widget_api, site, helpdesk, browser, tmp_path
):
    browser.open(site.url)
    browser.wait_for(_in_widget("!!w.querySelector('.launcher')"), "widget launcher")
    assert browser.evaluate(_in_widget("w.querySelector('.panel').hidden")) is True

    # Keyboard alone: Tab reaches the launcher, Enter opens the panel and focuses the input.
    browser.send("Input.dispatchKeyEvent", type="keyDown", key="Tab", code="Tab")
    browser.send("Input.dispatchKeyEvent", type="keyUp", key="Tab", code="Tab")
    assert browser.evaluate(_in_widget("w.activeElement === w.querySelector('.launcher')"))
    browser.press_enter()
    browser.wait_for(_in_widget("w.activeElement === w.querySelector('textarea')"), "focus")
    panel = browser.evaluate(
        _in_widget(
            "({role: w.querySelector('.panel').getAttribute('role'),"
            " log: w.querySelector('.log').getAttribute('role'),"
            " expanded: w.querySelector('.launcher').getAttribute('aria-expanded')})"
        )
    )
    assert panel == {"role": "dialog", "log": "log", "expanded": "true"}

    browser.send("Input.insertText", text="I was charged twice, what should I do?")
    browser.press_enter()
    browser.wait_for(
        _in_widget("w.querySelectorAll('.msg.assistant .sources a').length > 0"), "the answer"
    )
    customer, answer = _messages(browser)[-2:]
    assert customer["kind"] == "msg customer"
    assert "pending authorisation" in answer["text"]
    assert "https://help.lumenstream.example/billing/double-charge" in answer["links"]

    browser.evaluate(_in_widget("w.querySelector('.msg.assistant:last-child .up').click()"))
    browser.wait_for(
        _in_widget(
            "(w.querySelector('.vote-note') || {}).textContent === 'Thanks for your feedback.'"
        ),
        "the vote's confirmation",
    )
    [row] = _stored(widget_api.database_url)
    assert (row["status"], row["feedback"]) == ("answered", 1)
    shot = browser.screenshot("widget.png", tmp_path)
    assert shot.stat().st_size > 20_000

    browser.send("Page.reload")
    browser.wait_for(
        _in_widget("w.querySelectorAll('.msg.assistant .sources a').length > 0"),
        "the conversation after a reload",
    )
    assert _messages(browser)[-2:] == [customer, answer]
    assert browser.evaluate(_in_widget("w.querySelector('.up').getAttribute('aria-pressed')")) == (
        "true"
    )

    browser.evaluate(_in_widget("w.querySelector('.person').click()"))
    browser.wait_for(
        _in_widget(
            "w.querySelectorAll('.msg.assistant').length === 2"
            " && w.querySelector('.log').getAttribute('aria-busy') === 'false'"
        ),
        "the handoff reply",
    )
    reply = _messages(browser)[-1]
    assert "person from our support team" in reply["text"]
    assert "will reply from support@lumenstream.example" in reply["text"]
    rows = _stored(widget_api.database_url)
    assert [(r["status"], r["handoff_reason"]) for r in rows] == [
        ("answered", None),
        ("handoff", "requested_human"),
    ]
    # The widget kept the session id the API returned: one conversation, two turns.
    assert len({r["session_id"] for r in rows}) == 1
    # The server's own job thread posts the handoff to the helpdesk, with both turns.
    deadline = time.monotonic() + 30
    while not helpdesk.accepted() and time.monotonic() < deadline:
        time.sleep(0.2)
    [(headers, body, _)] = helpdesk.accepted()
    assert handoff.verify(SECRET, body, headers[handoff.SIGNATURE_HEADER])
    posted = json.loads(body)
    assert posted["session_id"] == rows[0]["session_id"]
    assert [m["text"] for m in posted["transcript"] if m["role"] == "customer"] == [
        "I was charged twice, what should I do?",
        "I'd like to talk to a person, please.",
    ]

    browser.evaluate(_in_widget("w.querySelector('.restart').click()"))
    assert [m["kind"] for m in _messages(browser)] == ["msg assistant"]
    stored = json.loads(browser.evaluate(f"sessionStorage.getItem('msa-widget:{widget_api.url}')"))
    assert stored == {"sessionId": None, "messages": [], "open": True}

    origins = {f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" for u in browser.requests}
    assert origins == {site.url, widget_api.url}
    api_calls = [urlsplit(u).path for u in browser.requests if u.startswith(widget_api.url)]
    assert {"/widget.js", "/question/stream", "/feedback"} <= set(api_calls)
    assert browser.evaluate("window.violations") == []


def test_an_answer_in_markdown_is_shown_formatted_and_nothing_else_becomes_markup(
    widget_api, site, browser
):
    """Help-centre articles answer in Markdown: the widget shows bold, italics, code, lists and
    http(s) links as elements (a newcomer saw the asterisks) and escaped marks as themselves
    (a reviewer saw "*Cancel membership*"; HTML pages escape "\\# of screens"), keeps any
    other link and any HTML as text, and shows a customer's own message as typed. The
    message is put in the widget's saved conversation, which it renders on load."""
    answer = (
        "Open **Account > Membership** and run `reset`.\n"
        "- Choose [Refunds](https://help.example/refunds)\n"
        "- Or [this](javascript:alert(1)) <img src=x onerror=alert(2)>\n"
        "1. First\n2. Second\nA line between\n3. Third\n"
        "See *Settings* or _Billing_ for my_file_name; \\# of screens"
    )
    saved = {
        "sessionId": None,
        "open": True,
        "messages": [
            {"role": "customer", "text": "**not bold** from me"},
            {"role": "assistant", "text": answer, "sources": [], "conversationId": None},
        ],
    }
    browser.open(site.url)
    browser.wait_for(_in_widget("!!w.querySelector('.launcher')"), "widget launcher")
    browser.evaluate(
        f"sessionStorage.setItem('msa-widget:{widget_api.url}', {json.dumps(json.dumps(saved))})"
    )
    browser.send("Page.reload")
    browser.wait_for(_in_widget("w.querySelectorAll('.msg.assistant li').length === 5"), "lists")
    shown = browser.evaluate(
        _in_widget(
            "(() => { const t = w.querySelector('.msg.assistant .text'); return {"
            " strong: Array.from(t.querySelectorAll('strong')).map(e => e.textContent),"
            " code: Array.from(t.querySelectorAll('code')).map(e => e.textContent),"
            " em: Array.from(t.querySelectorAll('em')).map(e => e.textContent),"
            " links: Array.from(t.querySelectorAll('a')).map(a => [a.textContent, a.href]),"
            " lists: Array.from(t.querySelectorAll('ul, ol')).map(l => l.tagName + l.start),"
            " images: t.querySelectorAll('img').length, text: t.textContent,"
            " customer: w.querySelector('.msg.customer .text').innerHTML}; })()"
        )
    )
    assert shown["strong"] == ["Account > Membership"] and shown["code"] == ["reset"]
    assert shown["em"] == ["Settings", "Billing"]
    assert "for my_file_name; # of screens" in shown["text"]
    assert shown["links"] == [["Refunds", "https://help.example/refunds"]]
    # The third step, after a line between, is numbered 3.
    assert shown["lists"] == ["ULundefined", "OL1", "OL3"] and shown["images"] == 0
    assert "**" not in shown["text"] and "<img src=x onerror=alert(2)>" in shown["text"]
    assert "this" in shown["text"] and "javascript" not in shown["text"]
    assert shown["customer"] == "**not bold** from me"


def test_a_streamed_answer_is_formatted_while_it_arrives(embedded_server, browser, tmp_path):
    """The widget formats a generated answer's Markdown as its words arrive, not only once
    the stream ends. The model is the OpenAI-compatible stand-in of test_generated_answers,
    made to hold its stream open mid-answer until the test has looked: no real model pauses
    on demand."""
    release = threading.Event()

    def held_mid_answer(handler, body) -> None:
        handler.start_events()
        for words in (
            "Open **Account settings** and choose **Cancel plan** [1]. ",
            "Your plan stays active until the end of the period you have paid for. ",
        ):
            handler.chunk(_event(words))
        release.wait(30)
        handler.chunk(_event(finish="stop"))
        handler.chunk(b"data: [DONE]\n\n")
        handler.end_chunks()

    model, page = StandIn(), DemoSite()
    model.behaviour = held_mid_answer
    with (
        serving(model),
        serving(page),
        running_api(
            embedded_server.get_uri(),
            tmp_path,
            PUBLISHABLE_KEYS=KEY,
            CORS_ORIGINS=page.url,
            LLM_PROVIDER="openai",
            OPENAI_BASE_URL=model.url,
            OPENAI_MODEL="stand-in",
        ) as served,
    ):
        page.api = served.url
        try:
            browser.open(page.url)
            browser.wait_for(_in_widget("!!w.querySelector('.launcher')"), "launcher")
            browser.evaluate(_in_widget("w.querySelector('.launcher').click()"))
            browser.wait_for(_in_widget("!w.querySelector('.panel').hidden"), "the panel")
            browser.evaluate(_in_widget("w.querySelector('textarea').focus()"))
            browser.send("Input.insertText", text="how do I cancel my subscription?")
            browser.press_enter()
            browser.wait_for(
                _in_widget("!!w.querySelector('.msg.assistant:last-child .text strong')"),
                "the first words, formatted",
            )
            shown = browser.evaluate(
                _in_widget(
                    "(() => { const t = w.querySelector('.msg.assistant:last-child .text');"
                    " return {busy: w.querySelector('.log').getAttribute('aria-busy'),"
                    " strong: Array.from(t.querySelectorAll('strong'))"
                    ".map(e => e.textContent), text: t.textContent}; })()"
                )
            )
        finally:
            release.set()
    assert shown["busy"] == "true", "the answer was still streaming"
    assert shown["strong"] == ["Account settings", "Cancel plan"]
    assert "**" not in shown["text"]


def test_widget_js_is_served_as_javascript(make_client):
    # With keys on: a <script> tag sends no key, so the script itself needs none.
    client = make_client(publishable_keys=(KEY,), cors_origins=("http://127.0.0.1:18450",))
    response = client.get("/widget.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert b"attachShadow" in response.data and b"X-API-Key" in response.data


def test_the_question_stream_answers_a_preflight_from_an_allowed_origin(make_client):
    client = make_client(cors_origins=("http://127.0.0.1:18450",), publishable_keys=(KEY,))
    response = client.options(
        "/question/stream",
        headers={
            "Origin": "http://127.0.0.1:18450",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-api-key",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:18450"
    assert "x-api-key" in response.headers["Access-Control-Allow-Headers"].lower()
