"""`assistant simulate` against a real `assistant serve` process and its own database."""

from __future__ import annotations

import re

import psycopg
import pytest
from click.testing import CliRunner

from assistant.cli import main
from assistant.config import PROJECT_ROOT
from assistant.simulate import SimulationError, default_questions, read_questions
from tests.conftest import free_port, running_api

SUMMARY = re.compile(
    r"questions: (\d+) ok, (\d+) errors; feedback: (\d+) sent, (\d+) errors(?: \((.*)\))?"
)


@pytest.fixture(scope="module")
def served(database_url, tmp_path_factory):
    """The API over a database of its own, so row counts are exact."""
    with running_api(database_url, tmp_path_factory.mktemp("simulated")) as api:
        yield api


def _counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM feedback)"
        ).fetchone()


def _questions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT question FROM conversations")]


def _simulate(*args: str):
    return CliRunner().invoke(main, ["simulate", *args], env={"KB_PATH": "demo"})


def test_simulate_fills_conversations_and_feedback(served):
    base, url = served
    conversations, votes = _counts(url)
    result = _simulate("--url", base, "--n", "20", "--feedback-rate", "0.5", "--seed", "7")
    assert result.exit_code == 0, result.output
    ok, errors, sent, failed, _ = SUMMARY.search(result.stdout).groups()
    assert (int(ok), int(errors), int(failed)) == (20, 0, 0)
    assert 0 < int(sent) < 20
    assert _counts(url) == (conversations + 20, votes + int(sent))
    assert set(_questions(url)) <= set(default_questions(PROJECT_ROOT / "data" / "demo-kb.csv"))


def test_simulate_replays_a_ground_truth_csv(served, tmp_path):
    base, url = served
    truth = tmp_path / "ground-truth.csv"
    truth.write_text(
        "question,category,id\n"
        "ground truth: how do I stop my plan?,SUBSCRIPTION,a1\n"
        '"ground truth: which payment methods, exactly, do you take?",PAYMENT,b2\n',
        encoding="utf-8",
    )
    conversations, votes = _counts(url)
    result = _simulate("--url", base, "--n", "6", "--feedback-rate", "0", "--questions", str(truth))
    assert result.exit_code == 0, result.output
    assert _counts(url) == (conversations + 6, votes)
    assert sum(q in read_questions(truth) for q in _questions(url)) == 6


def test_simulate_counts_failed_answers_and_exits_non_zero(served, tmp_path):
    base, url = served
    too_long = tmp_path / "too-long.txt"
    too_long.write_text("x" * 2500 + "\n", encoding="utf-8")
    conversations, _ = _counts(url)
    result = _simulate("--url", base, "--n", "3", "--questions", str(too_long))
    assert result.exit_code == 1
    ok, errors, _, _, reasons = SUMMARY.search(result.stdout).groups()
    assert (ok, errors, reasons) == ("0", "3", "HTTP 413: 3")
    assert _counts(url)[0] == conversations


def test_simulate_without_an_api_fails_fast():
    result = _simulate("--url", f"http://127.0.0.1:{free_port()}", "--n", "5")
    assert result.exit_code != 0
    assert "no API at" in result.output


def test_default_questions_are_the_demo_kb_plus_off_topic(repo_data):
    questions = default_questions(repo_data / "demo-kb.csv")
    in_scope = read_questions(repo_data / "demo-kb.csv")
    off_topic = read_questions(repo_data / "demo-out-of-scope.txt")
    assert len(in_scope) >= 60 and len(off_topic) >= 25
    assert questions == in_scope + off_topic
    assert not set(in_scope) & set(off_topic)


def test_read_questions_takes_question_or_instruction_columns(tmp_path):
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeffinstruction,intent\nfirst?,a\n  ,b\nsecond?,c\n", encoding="utf-8")
    assert read_questions(bom) == ["first?", "second?"]
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("query,intent\nfirst?,a\n", encoding="utf-8")
    with pytest.raises(SimulationError, match="'question' or 'instruction'"):
        read_questions(wrong)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(SimulationError, match="no questions"):
        read_questions(empty)
