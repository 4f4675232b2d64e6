"""`assistant chat` in a real terminal (a pty, through pexpect) against a served API: ask, read
the answer, vote, and find the vote in PostgreSQL; and `assistant ask --url/--random`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pexpect
import psycopg
import pytest
from click.testing import CliRunner

from assistant.cli import main
from assistant.client import AssistantClient
from assistant.routes import monitoring
from tests.conftest import free_port, running_api, stop_postgres

DOWN = "\x1b[B"


@pytest.fixture(scope="module")
def api(embedded_server, tmp_path_factory):
    with running_api(embedded_server.get_uri(), tmp_path_factory.mktemp("api")) as served:
        yield served


def _chat(*args: str) -> pexpect.spawn:
    env = {**os.environ, "TERM": "xterm-256color", "NO_COLOR": "1"}
    # prompt_toolkit asks the terminal where its cursor is; pexpect's pty never answers.
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"
    return pexpect.spawn(
        sys.executable,
        ["-m", "assistant", "chat", *args],
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 120),
    )


def _votes(database_url: str) -> dict[str, tuple[str, int]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT c.id, c.question, f.feedback FROM conversations c"
            " JOIN feedback f ON f.conversation_id = c.id"
        ).fetchall()
    return {conversation: (question, vote) for conversation, question, vote in rows}


@pytest.mark.timeout(300)
def test_chat_starts_and_votes_while_the_database_is_down(tmp_path):
    """A PostgreSQL of the test's own, stopped while the API runs: /health answers 503, yet
    the API answers, keeps the vote for later (202), and `assistant chat` works as usual."""
    import pgserver

    pgdata = tmp_path / "pg"
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        (tmp_path / "api").mkdir()
        with running_api(server.get_uri(), tmp_path / "api") as served:
            stop_postgres(server)
            client = AssistantClient(served.url)
            # /health may answer from a query seen within the last second (HEALTH_MAX_AGE);
            # the margin is for a CI machine busy with the rest of the suite.
            deadline = time.monotonic() + 15 * monitoring.HEALTH_MAX_AGE
            health = client.health()
            while health["database"] != "down" and time.monotonic() < deadline:
                time.sleep(0.1)
                health = client.health()
            log = (tmp_path / "api" / "api.log").read_text()[-3000:]
            assert health["database"] == "down" and health["status"] == "degraded", log

            chat = _chat("--url", served.url)
            chat.expect("Connected to .* 70 documents, demo KB")
            chat.expect("The API is degraded: its database is down; answers are kept")
            chat.expect("You:")
            chat.sendline("how do I cancel my subscription?")
            chat.expect(r"intent cancel-subscription .* id ([0-9a-f]{32})\]")
            conversation_id = chat.match.group(1)
            chat.expect("Was this answer helpful?")
            chat.send("+1\r")
            chat.expect("feedback \\+1 saved, and will be stored when the database is back")
            chat.expect("You:")
            chat.sendintr()
            chat.expect(pexpect.EOF)
            chat.close()
            assert chat.exitstatus == 0

            reply = client.feedback(conversation_id, -1)
            assert reply["status"] == "queued"
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
    finally:
        server.cleanup()


def test_chat_asks_shows_the_answer_and_stores_the_vote(api):
    chat = _chat("--url", api.url)
    chat.expect("Connected to .* 70 documents, demo KB")
    chat.expect("You:")
    chat.sendline("my card was charged twice")
    chat.expect("Assistant:")
    chat.expect("Sources:")
    chat.expect(r"\[answered \| intent double-charge \| confidence [0-9.]+ \| "
                r"extractive:extractive \| id ([0-9a-f]{32})\]")  # fmt: skip
    conversation_id = chat.match.group(1)
    chat.expect("Was this answer helpful?")
    chat.send("-1\r")  # typing filters the menu down to "-1"
    chat.expect("feedback -1 saved")
    assert _votes(api.database_url)[conversation_id] == ("my card was charged twice", -1)

    # The follow-up goes into the same API session, and Ctrl-C leaves cleanly.
    chat.expect("You:")
    chat.sendline("and how do I cancel my subscription?")
    chat.expect(r"intent cancel-subscription .* id ([0-9a-f]{32})\]")
    follow_up = chat.match.group(1)
    chat.expect("Was this answer helpful?")
    chat.send("\r")  # Enter alone skips: no thumbs-up the customer did not give
    chat.expect("You:")
    chat.sendintr()
    chat.expect("Bye.")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0
    assert follow_up not in _votes(api.database_url)
    with psycopg.connect(api.database_url) as conn:
        sessions = conn.execute(
            "SELECT count(DISTINCT session_id) FROM conversations WHERE id IN (%s, %s)",
            (conversation_id, follow_up),
        ).fetchone()
    assert sessions == (1,)


def test_chat_random_offers_a_question_from_the_file(api, tmp_path):
    questions = tmp_path / "ground-truth.csv"
    questions.write_text("question,id\nwhat payment methods do you accept?,p1\n")
    chat = _chat("--url", api.url, "--questions", str(questions))
    chat.expect("what payment methods do you accept\\?  \\(Enter asks it\\)")
    chat.send("\r")
    chat.expect(r"intent payment-methods .* id ([0-9a-f]{32})\]")
    conversation_id = chat.match.group(1)
    chat.expect("Was this answer helpful?")
    chat.send(DOWN + "\r")  # from "skip" to "+1"
    chat.expect(r"feedback \+1 saved")
    chat.expect("You:")
    chat.sendline("exit")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0
    assert _votes(api.database_url)[conversation_id] == ("what payment methods do you accept?", 1)


def test_chat_reads_a_piped_vote(api):
    """Questions and votes piped in, not typed: the "-1" after the first answer is stored as
    -1, and the empty line after the second records no vote."""
    env = {**os.environ, "NO_COLOR": "1"}
    piped = subprocess.run(
        [sys.executable, "-m", "assistant", "chat", "--url", api.url],
        input="my card was charged twice\n-1\nhow do I cancel my subscription?\n\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    charged, cancel = re.findall(r"\| id ([0-9a-f]{32})\]", piped.stdout)
    votes = _votes(api.database_url)
    assert votes[charged] == ("my card was charged twice", -1)
    assert cancel not in votes


def test_chat_without_an_api_says_so():
    chat = _chat("--url", f"http://127.0.0.1:{free_port()}")
    chat.expect("no API at")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 1


def test_ask_url_json_and_random(api, tmp_path):
    result = CliRunner().invoke(
        main, ["ask", "--url", api.url, "--json", "I forgot my password"], env={"KB_PATH": "demo"}
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["intent"] == "reset-password"
    with psycopg.connect(api.database_url) as conn:
        assert conn.execute(
            "SELECT question FROM conversations WHERE id = %s", (body["conversation_id"],)
        ).fetchone() == ("I forgot my password",)

    one = tmp_path / "one.txt"
    one.write_text("I forgot my password\n")
    result = CliRunner().invoke(
        main, ["ask", "--url", api.url, "--random", "--questions", str(one)]
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "> I forgot my password"
    assert "[answered | intent reset-password" in result.stdout

    result = CliRunner().invoke(main, ["ask", "--url", api.url, "--random", "--json"])
    assert result.exit_code == 0, result.output
    asked = json.loads(result.stdout)["question"]
    assert result.stderr.strip() == f"> {asked}"

    # A blank question never leaves the command; the API's own error shows through.
    result = CliRunner().invoke(main, ["ask", "--url", api.url, "--json", " "])
    assert result.exit_code == 2 and "give a QUESTION (in quotes) or --random" in result.output
    result = CliRunner().invoke(main, ["ask", "--url", api.url, "--json", "x" * 5000])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == "question_too_long"
    result = CliRunner().invoke(main, ["ask", "--url", f"http://127.0.0.1:{free_port()}", "hi"])
    assert result.exit_code == 1 and '"code": "unreachable"' in result.stdout
    result = CliRunner().invoke(main, ["ask"])
    assert result.exit_code == 2 and "give a QUESTION (in quotes) or --random" in result.output
