"""Handoff that reaches a person: a handed-off conversation is posted, signed, to a real HTTP
receiver (http.server in this process, recording every request, as a helpdesk's webhook
endpoint would receive it), retried through the jobs table until accepted, and its delivery
recorded on the conversation. The receiver's failures are made to happen (it answers 500 for
its first posts, or nothing listens on its port): that is the fault under test."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
from psycopg.rows import dict_row

from assistant import handoff
from assistant.app import create_app
from assistant.db import Database
from assistant.jobs import JobRunner
from assistant.judge import Judge
from assistant.privacy import Masker, mask_logs
from assistant.rag import Assistant
from assistant.routes.questions import conversation_row
from tests.conftest import free_port, serving

SECRET = "test-signing-secret"


class Receiver(ThreadingHTTPServer):
    """Records every POST (headers and raw body); answers 500 to the first `failures`, then 200."""

    daemon_threads = True

    def __init__(self, failures: int = 0):
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.failures = failures
        self.posts: list[tuple[dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/handoff"

    def accepted(self) -> list[tuple[dict[str, str], bytes, int]]:
        return [post for post in self.posts if post[2] == 200]


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, *args) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            status = 500 if len(self.server.posts) < self.server.failures else 200
            self.server.posts.append((dict(self.headers), body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def flaky_receiver() -> Iterator[Receiver]:
    server = Receiver(failures=2)
    with serving(server):
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    with serving(server):
        yield server


def _forwarding(assistant: Assistant) -> Assistant:
    """The session's assistant, promising a person's reply as it does with a webhook set."""
    return Assistant(
        assistant.retriever,
        assistant.provider,
        assistant.profile,
        k=assistant.k,
        knowledge_source=assistant.knowledge_source,
        signals=assistant.signals,
        handoffs_forwarded=True,
    )


def _app(settings, assistant, database: Database, tmp_path, url: str | None, **overrides):
    changed = replace(
        settings,
        database_url=database.url,
        data_dir=tmp_path,
        handoff_webhook_url=url,
        handoff_webhook_secret=SECRET,
        **overrides,
    )
    return create_app(changed, assistant=assistant, database=database)


def _fast_runner(database: Database, url: str) -> JobRunner:
    """The jobs runner as `assistant worker` builds it, retrying after 0.05 s, not 5 s."""
    webhook = handoff.HandoffWebhook(database, url, SECRET, timeout=5)
    return JobRunner(database, Judge(None), handoff=webhook, retry_backoff=0.05)


def _run_until(runner: JobRunner, done, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        runner.run_until_idle(5)
        time.sleep(0.05)


def _row(database: Database, conversation_id: str) -> dict:
    with psycopg.connect(database.url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM conversations WHERE id = %s", (conversation_id,)
        ).fetchone()


def _jobs(database: Database, kind: str) -> list[dict]:
    with psycopg.connect(database.url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM jobs WHERE kind = %s ORDER BY id", (kind,)).fetchall()


def test_a_handoff_reaches_the_receiver_signed_with_the_whole_transcript_after_two_failures(
    settings, assistant, own_database, flaky_receiver, tmp_path
):
    app = _app(settings, _forwarding(assistant), own_database, tmp_path, flaky_receiver.url)
    client = app.test_client()
    session = "handoff-session-1"
    asked = [
        "how do I cancel my subscription?",
        "I still can't log in, my email is jane.doe@example.com and my phone +1 415 555 0134",
        "I want to talk to a real person",
    ]
    replies = []
    try:
        for question in asked:
            reply = client.post("/question", json={"question": question, "session_id": session})
            assert reply.status_code == 200
            replies.append(reply.get_json())
    finally:
        app.extensions["flusher"].stop()
    last = replies[-1]
    assert last["status"] == "handoff"
    # The customer is told a person will reply, and where: the business profile's channels.
    assert "a person from our support team" in last["answer"]
    assert "support@lumenstream.example" in last["answer"]
    assert "+1-555-0100" in last["answer"]
    assert [job["key"] for job in _jobs(own_database, "handoff")] == [last["conversation_id"]]

    runner = _fast_runner(own_database, flaky_receiver.url)
    _run_until(runner, lambda: flaky_receiver.accepted())
    time.sleep(0.3)  # a duplicate post, were there one, would arrive by now
    runner.run_until_idle(5)

    # Two refusals, then exactly one accepted delivery.
    assert [status for _, _, status in flaky_receiver.posts] == [500, 500, 200]
    [(headers, body, _)] = flaky_receiver.accepted()
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers[handoff.SIGNATURE_HEADER] == f"sha256={expected}"
    assert handoff.verify(SECRET, body, headers[handoff.SIGNATURE_HEADER])
    assert not handoff.verify(SECRET, body + b" ", headers[handoff.SIGNATURE_HEADER])
    assert not handoff.verify("another-secret", body, headers[handoff.SIGNATURE_HEADER])
    assert headers[handoff.DELIVERY_HEADER] == last["conversation_id"]

    payload = json.loads(body)
    assert payload["event"] == "conversation.handoff"
    assert payload["conversation_id"] == last["conversation_id"]
    assert payload["session_id"] == session
    assert payload["reason"] == "requested_human"
    # Every turn, in order, as the customer wrote it and as the assistant replied.
    texts = [(m["role"], m["text"]) for m in payload["transcript"]]
    expected_turns = []
    for question, reply in zip(asked, replies, strict=True):
        expected_turns += [("customer", question), ("assistant", reply["answer"])]
    assert texts == expected_turns
    assert payload["contact"] == {"emails": ["jane.doe@example.com"], "phones": ["+14155550134"]}
    # The sources of the last turn that had any: the KB entries the assistant worked from.
    with_sources = [r for r in replies if r["sources"]][-1]
    assert [s["id"] for s in payload["sources"]] == [s["id"] for s in with_sources["sources"]]
    assert "jane.doe@example.com" in payload["text"]

    # Delivery recorded on the conversation, and the job done after three attempts.
    row = _row(own_database, last["conversation_id"])
    assert row["handoff_delivery"] == "delivered"
    assert row["handoff_attempts"] == 3
    assert row["handoff_http_status"] == 200
    assert row["handoff_delivered_at"] is not None
    [job] = _jobs(own_database, "handoff")
    assert (job["status"], job["attempts"]) == ("done", 3)
    # The earlier turns were no handoff: nothing else was queued for the helpdesk.
    assert _row(own_database, replies[0]["conversation_id"])["handoff_delivery"] is None


def test_a_handoff_nobody_accepts_is_marked_failed_after_its_last_attempt(
    settings, assistant, own_database, tmp_path
):
    # Nothing listens on this port: every post is refused.
    url = f"http://127.0.0.1:{free_port()}/hook"
    app = _app(settings, _forwarding(assistant), own_database, tmp_path, url)
    try:
        reply = app.test_client().post("/question", json={"question": "let me speak to an agent"})
    finally:
        app.extensions["flusher"].stop()
    conversation_id = reply.get_json()["conversation_id"]
    assert reply.get_json()["status"] == "handoff"

    webhook = handoff.HandoffWebhook(own_database, url, SECRET, timeout=2)
    runner = JobRunner(own_database, Judge(None), handoff=webhook, retry_backoff=0.001)
    _run_until(runner, lambda: _jobs(own_database, "handoff")[0]["status"] == "failed", 60)

    [job] = _jobs(own_database, "handoff")
    assert (job["status"], job["attempts"]) == ("failed", handoff.HANDOFF_MAX_ATTEMPTS)
    row = _row(own_database, conversation_id)
    assert row["handoff_delivery"] == "failed"
    assert row["handoff_attempts"] == handoff.HANDOFF_MAX_ATTEMPTS
    assert row["handoff_http_status"] is None
    assert row["handoff_error"] == "ConnectError"


def test_without_a_webhook_nothing_is_queued_and_the_reply_names_the_channels(
    settings, assistant, own_database, tmp_path
):
    app = _app(settings, assistant, own_database, tmp_path, None)
    try:
        reply = app.test_client().post("/question", json={"question": "let me speak to an agent"})
    finally:
        app.extensions["flusher"].stop()
    body = reply.get_json()
    assert body["status"] == "handoff"
    # No promise of a reply nobody will send; where to reach a person instead.
    assert "will reply" not in body["answer"]
    assert "connect you" not in body["answer"].lower()
    assert "support@lumenstream.example" in body["answer"]
    assert _jobs(own_database, "handoff") == []
    assert _row(own_database, body["conversation_id"])["handoff_delivery"] is None


def test_a_runner_without_the_webhook_leaves_handoff_jobs_to_one_with_it(
    settings, assistant, own_database, flaky_receiver, tmp_path
):
    app = _app(settings, _forwarding(assistant), own_database, tmp_path, flaky_receiver.url)
    try:
        app.test_client().post("/question", json={"question": "let me speak to an agent"})
    finally:
        app.extensions["flusher"].stop()
    # A worker started without HANDOFF_WEBHOOK_URL judges, and does not touch the handoff.
    judging_only = JobRunner(own_database, Judge(None))
    assert judging_only.run_until_idle(10) == 1
    [job] = _jobs(own_database, "handoff")
    assert (job["status"], job["attempts"]) == ("queued", 0)
    assert flaky_receiver.posts == []


def test_a_webhook_without_a_secret_is_refused(own_database):
    with pytest.raises(handoff.MissingSecret):
        handoff.HandoffWebhook(own_database, "http://127.0.0.1:9/hook", "")


def test_a_spooled_handoff_gets_its_job_when_the_spool_is_replayed(
    settings, assistant, own_database, flaky_receiver, tmp_path
):
    app = _app(settings, _forwarding(assistant), own_database, tmp_path, flaky_receiver.url)
    spool, flusher = app.extensions["spool"], app.extensions["flusher"]
    try:
        # As the app stores a handoff while PostgreSQL is away: in the spool, marked queued.
        row = conversation_row(assistant.answer("let me speak to an agent"))
        assert row["status"] == "handoff"
        spool.add_conversation({**row, "handoff_delivery": "queued"})
        assert _jobs(own_database, "handoff") == []
        assert flusher.flush() == 1
    finally:
        flusher.stop()
    [job] = _jobs(own_database, "handoff")
    assert (job["key"], job["status"]) == (row["id"], "queued")
    assert _row(own_database, row["id"])["handoff_delivery"] == "queued"


def _ask(app, session: str, *questions: str) -> list[dict]:
    """The replies to `questions`, asked in turn in `session`; the app's spool flusher is
    stopped after."""
    client = app.test_client()
    replies = []
    try:
        for question in questions:
            reply = client.post("/question", json={"question": question, "session_id": session})
            assert reply.status_code == 200, reply.get_json()
            replies.append(reply.get_json())
    finally:
        app.extensions["flusher"].stop()
    return replies


ASK_FOR_A_PERSON = "let me speak to an agent"
GIVE_A_CONTACT = "you can reach me at jane.doe@example.com or (415) 555-0134"


def test_a_contact_given_after_the_handoff_reaches_the_receiver_after_it_signed_and_once(
    settings, assistant, own_database, flaky_receiver, tmp_path
):
    app = _app(settings, _forwarding(assistant), own_database, tmp_path, flaky_receiver.url)
    session = "handoff-contact-1"
    handed, given = _ask(app, session, ASK_FOR_A_PERSON, GIVE_A_CONTACT)
    assert handed["status"] == "handoff"
    # Acknowledged, with the contact read back and the team's own address: neither a decline
    # nor an answer from the knowledge base.
    assert given["status"] == "contact"
    assert "passed jane.doe@example.com and +14155550134 on to the person" in given["answer"]
    assert "support@lumenstream.example" in given["answer"]
    assert (given["sources"], given["intent"]) == ([], None)
    queued = [handed["conversation_id"], given["conversation_id"]]
    assert [job["key"] for job in _jobs(own_database, "handoff")] == queued

    # Both queued before any post: the receiver refuses the handoff twice meanwhile.
    runner = _fast_runner(own_database, flaky_receiver.url)
    _run_until(runner, lambda: len(flaky_receiver.accepted()) == 2)
    time.sleep(0.3)  # a duplicate post, were there one, would arrive by now
    runner.run_until_idle(5)

    # The contact waited for its handoff to be accepted, then was posted once.
    events = [(json.loads(body)["event"], status) for _, body, status in flaky_receiver.posts]
    assert events == [
        ("conversation.handoff", 500),
        ("conversation.handoff", 500),
        ("conversation.handoff", 200),
        ("conversation.contact", 200),
    ]
    [(_, handoff_body, _), (headers, body, _)] = flaky_receiver.accepted()
    assert handoff.verify(SECRET, body, headers[handoff.SIGNATURE_HEADER])
    assert headers[handoff.DELIVERY_HEADER] == given["conversation_id"]
    payload, handoff_payload = json.loads(body), json.loads(handoff_body)
    assert payload["conversation_id"] == given["conversation_id"]
    assert payload["session_id"] == session
    # The handoff it follows, so that the receiver finds the ticket the handoff opened.
    assert payload["handoff_conversation_id"] == handed["conversation_id"]
    assert handoff_payload["handoff_conversation_id"] == handed["conversation_id"]
    assert (payload["reason"], payload["handed_off_at"]) == (
        "requested_human",
        handoff_payload["handed_off_at"],
    )
    assert [(m["role"], m["text"]) for m in payload["transcript"]] == [
        ("customer", ASK_FOR_A_PERSON),
        ("assistant", handed["answer"]),
        ("customer", GIVE_A_CONTACT),
        ("assistant", given["answer"]),
    ]
    assert payload["contact"] == {"emails": ["jane.doe@example.com"], "phones": ["+14155550134"]}
    assert "jane.doe@example.com, +14155550134" in payload["text"]

    row = _row(own_database, given["conversation_id"])
    assert (row["status"], row["handoff_reason"]) == ("contact", None)
    assert (row["handoff_delivery"], row["handoff_attempts"]) == ("delivered", 1)
    assert _row(own_database, handed["conversation_id"])["handoff_attempts"] == 3
    assert {job["status"] for job in _jobs(own_database, "handoff")} == {"done"}

    # One handoff in the figures: the contact is neither a handoff nor a support question.
    stats = app.test_client().get("/stats").get_json()
    assert stats["handoff_rate"] == 1.0
    assert stats["handoff_rate_by_reason"] == {"requested_human": 1.0}
    assert {"status": "contact", "conversations": 1} in stats["status_mix"]


def test_a_follow_up_without_a_contact_after_the_handoff_is_answered_as_before_and_not_posted(
    settings, assistant, own_database, receiver, tmp_path
):
    app = _app(settings, _forwarding(assistant), own_database, tmp_path, receiver.url)
    question = "how do I cancel my subscription?"
    handed, follow_up = _ask(app, "handoff-contact-2", ASK_FOR_A_PERSON, question)
    assert handed["status"] == "handoff"
    assert follow_up["status"] == "answered"
    assert follow_up["answer"] == assistant.answer(question).answer
    assert [job["key"] for job in _jobs(own_database, "handoff")] == [handed["conversation_id"]]

    runner = _fast_runner(own_database, receiver.url)
    _run_until(runner, lambda: receiver.accepted())
    time.sleep(0.3)
    runner.run_until_idle(5)
    [(_, body, _)] = receiver.posts
    assert json.loads(body)["event"] == "conversation.handoff"
    assert _row(own_database, follow_up["conversation_id"])["handoff_delivery"] is None


def test_without_a_webhook_a_contact_after_the_handoff_is_not_taken_for_one_nor_posted(
    settings, assistant, own_database, receiver, tmp_path
):
    app = _app(settings, assistant, own_database, tmp_path, None)
    handed, given = _ask(app, "handoff-contact-3", ASK_FOR_A_PERSON, GIVE_A_CONTACT)
    assert handed["status"] == "handoff"
    # As before: nothing would pass it on, so nothing says it was.
    assert given["status"] != "contact"
    assert "passed" not in given["answer"]
    assert _jobs(own_database, "handoff") == []
    assert _row(own_database, given["conversation_id"])["handoff_delivery"] is None
    # A worker that has a webhook finds nothing to post.
    _fast_runner(own_database, receiver.url).run_until_idle(10)
    assert receiver.posts == []


def test_with_pii_masking_a_contact_after_the_handoff_is_masked_and_not_passed_on(
    settings, assistant, own_database, receiver, tmp_path
):
    app = _app(
        settings, _forwarding(assistant), own_database, tmp_path, receiver.url, pii_masking=True
    )
    try:
        handed, given = _ask(app, "handoff-contact-4", ASK_FOR_A_PERSON, GIVE_A_CONTACT)
    finally:
        mask_logs(Masker())  # log masking is process-wide: back to the default
    # Masked before anything saw it: there is no contact left to pass on.
    assert _row(own_database, given["conversation_id"])["question"] == (
        "you can reach me at [email] or [phone]"
    )
    assert given["status"] != "contact"
    assert [job["key"] for job in _jobs(own_database, "handoff")] == [handed["conversation_id"]]
