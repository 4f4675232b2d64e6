"""Personal data at the API level: a card number a customer types is masked before it reaches
PostgreSQL, the spool, the logs or the model; PII_MASKING=on masks emails and phone numbers.

The model is the OpenAI-compatible stand-in of test_generated_answers.py: it keeps every
request body it is sent, which is the prompt as the model received it, and answers what the
test scripts (here, a reply holding a card number no real model would be asked for). The
spool is written by an app whose database address has nothing listening, the one way to make
the outage happen on purpose; the database read back is a real PostgreSQL.
"""

from __future__ import annotations

import json
import logging

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from assistant.llm import make_provider
from assistant.privacy import Masker, luhn_valid, mask_cards, mask_logs
from assistant.rag import Assistant
from tests.conftest import running_api
from tests.test_db import _row
from tests.test_generated_answers import (  # noqa: F401 (stand_in is a fixture)
    _app,
    _app_on_a_database_that_is_down,
    _settings,
    answer,
    stand_in,
)

PAN = "4111 1111 1111 1111"
PAN_DASHED = "5500-0000-0000-0004"
# The model's reply holds a third card, which nothing it was sent contained.
INVENTED = "4000056655665556"
CARDS = ("4111111111111111", "5500000000000004", INVENTED)
# 16 digits that fail the Luhn check: an order number, which must stay readable.
ORDER = "1234567890123456"


def _flat(text: str) -> str:
    """Separators taken out, so a card written in groups is found as one digit run."""
    return text.replace(" ", "").replace("-", "")


def _assert_no_card(where: str, text: str) -> None:
    for card in CARDS:
        assert card not in _flat(text), f"a card number in {where}"


def _dump(database_url: str) -> str:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = [
            *conn.execute("SELECT * FROM conversations").fetchall(),
            *conn.execute("SELECT * FROM feedback").fetchall(),
        ]
    return json.dumps(rows, default=str)


@pytest.fixture
def masked_logs_restored():
    """Log masking is process-wide: a test that turns PII_MASKING on hands back the default."""
    yield
    mask_logs(Masker())


def test_luhn_check_and_card_shapes():
    assert luhn_valid("4111111111111111") and not luhn_valid(ORDER)
    assert luhn_valid(ORDER[:-1] + "2")
    cases = {
        f"card {PAN}, thanks": "card **** **** **** 1111, thanks",
        f"card {PAN_DASHED}.": "card **** **** **** 0004.",
        "amex 3782 822463 10005": "amex **** **** **** 0005",
        # After a phone number in one digit run: the card alone is masked.
        "call 0800 123 4111 1111 1111 1111": "call 0800 123 **** **** **** 1111",
        f"order {ORDER}": f"order {ORDER}",
        "ticket 2024-05-01 12345": "ticket 2024-05-01 12345",
    }
    assert {text: mask_cards(text) for text in cases} == cases


def test_cards_written_with_dots_and_other_common_separators_are_masked():
    cases = {
        "card 4111.1111.1111.1111.": "card **** **** **** 1111.",
        "amex 3782.822463.10005": "amex **** **** **** 0005",
        # As word processors and phones write them: no-break spaces, en dashes.
        "card 4111\u00a01111\u00a01111\u00a01111": "card **** **** **** 1111",
        "card 5500\u20130000\u20130000\u20130004": "card **** **** **** 0004",
    }
    assert {text: mask_cards(text) for text in cases} == cases


def test_numbers_written_with_dots_that_are_not_cards_are_kept():
    # Each holds 13-19 digits that pass the Luhn check when its separators are dropped: a row
    # of decimals or a date range, not a card, because it mixes dots with other separators.
    kept = (
        "plans cost 4.99 9.99 24.99 11.99 a month",
        "billed 2024.01.15 2024.01.23",
        "the outage of 2024.01.15-2024.01.23",
        "app 10.15.7, TV firmware 2024.01.15, call 555.123.4567",
    )
    assert {text: mask_cards(text) for text in kept} == {text: text for text in kept}


def test_a_card_number_never_reaches_postgres_the_spool_the_logs_or_the_model(
    stand_in,  # noqa: F811
    assistant,
    own_database,
    tmp_path,
    caplog,
):
    # Every library's records at their most talkative (test_log_records_are_masked_whoever_
    # logs_them shows a record that held a card being masked).
    caplog.set_level(logging.DEBUG)
    stand_in.behaviour = answer(f"Refunds go back to card {INVENTED} within 5 days [1].")
    question = f"how do I cancel my subscription? card {PAN}, order {ORDER}"
    with _app(stand_in, assistant, own_database, tmp_path) as app:
        client = app.test_client()
        first = client.post("/question", json={"question": question, "session_id": "s-1"})
        assert first.status_code == 200, first.get_json()
        # The follow-up sends the first turn back to the model as history.
        follow_up = client.post(
            "/question/stream",
            json={
                "question": f"can I pause my subscription instead? it's on card {PAN_DASHED}",
                "session_id": "s-1",
            },
        )
        assert follow_up.status_code == 200
        vote = client.post(
            "/feedback",
            json={
                "conversation_id": first.get_json()["conversation_id"],
                "feedback": -1,
                "comment": f"you still have {PAN_DASHED} on file",
            },
        )
        assert vote.status_code == 200

    settings = _settings(stand_in.url, tmp_path)
    live = Assistant(assistant.retriever, make_provider(settings), assistant.profile)
    down = _app_on_a_database_that_is_down(settings, live, own_database)
    try:
        client = down.test_client()
        spooled = client.post("/question", json={"question": f"card {PAN} was charged"})
        assert spooled.status_code == 200
        queued = client.post(
            "/feedback",
            json={
                "conversation_id": spooled.get_json()["conversation_id"],
                "feedback": 1,
                "comment": f"thanks, it was {PAN}",
            },
        )
        assert queued.status_code == 202
    finally:
        down.extensions["flusher"].stop()

    stored = _dump(own_database.url)
    spool = "".join(path.read_text() for path in (tmp_path / "spool").glob("*.jsonl"))
    prompts = json.dumps(stand_in.requests)
    for where, text in {
        "PostgreSQL": stored,
        "the spool": spool,
        "the prompts": prompts,
        "the logs": caplog.text,
        "the reply": first.get_data(as_text=True),
    }.items():
        _assert_no_card(where, text)
    # Each place did hold the text, masked: the checks above had something to find.
    assert "**** **** **** 1111" in stored and "**** **** **** 0004" in stored
    assert "**** **** **** 5556" in stored
    assert "**** **** **** 1111" in spool and spool.count("**** **** **** 1111") == 2
    # The follow-up's prompt carried the first turn: history is masked too.
    assert any(
        "**** **** **** 1111" in json.dumps(sent) and "**** **** **** 0004" in json.dumps(sent)
        for sent in stand_in.requests
    )
    # The order number is not a card: it is kept for the agent who reads the conversation.
    assert ORDER in stored and ORDER in prompts


def test_log_records_are_masked_whoever_logs_them(app, caplog):
    caplog.set_level(logging.INFO)
    logger = logging.getLogger("anything.at.all")
    logger.warning("customer wrote %s", PAN)
    try:
        raise ValueError(f"cannot parse {PAN_DASHED}")
    except ValueError:
        logger.exception("failed")
    _assert_no_card("the logs", caplog.text)
    assert "customer wrote **** **** **** 1111" in caplog.text
    assert "cannot parse **** **** **** 0004" in caplog.text


def test_a_number_that_fails_the_luhn_check_is_kept(client, database):
    question = f"where is my order {ORDER}? and ticket 4111 1111 1111 1112"
    response = client.post("/question", json={"question": question})
    assert response.status_code == 200
    stored = database.get_conversation(response.get_json()["conversation_id"])
    assert stored["question"] == question


def test_pii_masking_masks_emails_and_phones_but_not_the_business_contacts(
    make_client, database, caplog, masked_logs_restored
):
    client = make_client(pii_masking=True, pii_phone_region="GB")
    question = (
        "I want to talk to a human. I'm jo.doe+tv@example.co.uk, "
        "call me on 020 7946 0958 or +1 415 555 0132, card 4111111111111111"
    )
    response = client.post("/question", json={"question": question, "session_id": "pii"})
    assert response.status_code == 200
    body = response.get_json()
    vote = client.post(
        "/feedback",
        json={
            "conversation_id": body["conversation_id"],
            "feedback": -1,
            "comment": "mail jo@example.com",
        },
    )
    assert vote.status_code == 200
    stored = database.get_conversation(body["conversation_id"])
    assert stored["question"] == (
        "I want to talk to a human. I'm [email], call me on [phone] or [phone], "
        "card **** **** **** 1111"
    )
    assert stored["feedback_comment"] == "mail [email]"
    # A handoff tells the customer how to reach the team: that address is the business's own.
    assert body["status"] == "handoff" and "support@lumenstream.example" in stored["answer"]
    logging.getLogger("anything").warning("reply to jo@example.com")
    assert "reply to [email]" in caplog.text


def test_history_stored_before_masking_reaches_the_model_masked(
    stand_in,  # noqa: F811
    assistant,
    own_database,
    tmp_path,
):
    # A row as a version without masking stored it: saved directly, not through the API.
    own_database.save_conversation(
        _row("legacy", session_id="legacy-session", question=f"my card is {PAN}")
    )
    with _app(stand_in, assistant, own_database, tmp_path) as app:
        response = app.test_client().post(
            "/question",
            json={"question": "how do I cancel my subscription?", "session_id": "legacy-session"},
        )
    assert response.status_code == 200
    [sent] = stand_in.requests
    turns = [message["content"] for message in sent["messages"]]
    assert "my card is **** **** **** 1111" in turns
    _assert_no_card("the prompt", json.dumps(sent))


def test_the_served_api_masks_a_card_in_gunicorns_own_log_lines(embedded_server, tmp_path):
    """gunicorn logs each request's path at DEBUG, a line the app never wrote: a card number
    sent as a conversation id would land in the server's log."""
    with running_api(embedded_server.get_uri(), tmp_path, LOG_LEVEL="DEBUG") as served:
        response = requests.get(f"{served.url}/conversations/{CARDS[0]}", timeout=10)
        assert response.status_code == 404
    log = (tmp_path / "api.log").read_text()
    assert "GET /conversations/**** **** **** 1111" in log
    _assert_no_card("the server's log", log)
