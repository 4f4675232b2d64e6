import csv
import json

import psycopg
import pytest
from click.testing import CliRunner

from assistant.cli import main
from assistant.config import PROJECT_ROOT
from tests.conftest import BITEXT_DEV


def _env(database_url, settings):
    return {
        "DATABASE_URL": database_url,
        "KB_PATH": "demo",
        "DATA_DIR": str(settings.data_dir),
        "LLM_PROVIDER": "extractive",
    }


def test_ask_json_prints_the_question_body_and_logs_it(database_url, settings):
    result = CliRunner().invoke(
        main,
        ["ask", "how do I cancel my subscription?", "--json"],
        env=_env(database_url, settings),
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["intent"] == "cancel-subscription" and "{{" not in body["answer"]
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM conversations WHERE id = %s", (body["conversation_id"],)
        ).fetchone() == (1,)


def test_ask_plain_prints_answer_and_status(database_url, settings):
    result = CliRunner().invoke(
        main, ["ask", "I forgot my password"], env=_env(database_url, settings)
    )
    assert result.exit_code == 0, result.output
    assert "intent reset-password" in result.output
    # A decline names the nearest entry without a confidence; a handoff says why.
    env = _env(database_url, settings)
    declined = CliRunner().invoke(main, ["ask", "what's the weather in Paris?"], env=env)
    assert declined.exit_code == 0, declined.output
    assert "[out_of_scope | nearest " in declined.output and "confidence" not in declined.output
    handed = CliRunner().invoke(main, ["ask", "can I talk to a real person?"], env=env)
    assert "[handoff (requested_human) | " in handed.output


def test_ask_kb_answers_from_that_knowledge_base(database_url, settings):
    """`--kb` names the KB for one question, over KB_PATH (demo here)."""
    faq = PROJECT_ROOT / "tests" / "data" / "reelhouse-faq.csv"
    result = CliRunner().invoke(
        main,
        ["ask", "--kb", str(faq), "--json", "can I pause my membership for a while?"],
        env=_env(database_url, settings),
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sources"][0]["id"] == "pause"
    # --random asks one of that KB's own questions.
    result = CliRunner().invoke(
        main, ["ask", "--kb", str(faq), "--random", "--json"], env=_env(database_url, settings)
    )
    assert result.exit_code == 0, result.output
    asked = json.loads(result.stdout)["question"]
    assert asked in {row["question"] for row in csv.DictReader(faq.open(encoding="utf-8"))}
    result = CliRunner().invoke(main, ["ask", "--kb", str(faq), "--url", "http://x", "hi"])
    assert result.exit_code == 2 and "running API answers from its own KB" in result.output


def test_db_init_and_listing(database_url, settings):
    runner = CliRunner()
    result = runner.invoke(main, ["db", "init"], env=_env(database_url, settings))
    assert result.exit_code == 0 and "up to date" in result.output
    runner.invoke(
        main, ["ask", "what payment methods do you accept"], env=_env(database_url, settings)
    )
    result = runner.invoke(main, ["db", "--limit", "3"], env=_env(database_url, settings))
    assert result.exit_code == 0, result.output
    assert "conversations:" in result.output and "payment-methods" in result.output


def test_ingest_reports_counts_per_intent(settings):
    result = CliRunner().invoke(main, ["ingest", "--kb", str(settings.demo_kb)])
    assert result.exit_code == 0, result.output
    assert "70 entries from" in result.output and "10 categories, 70 topics" in result.output
    assert "hybrid ranking" in result.output and "Parental controls" in result.output
    assert "every placeholder is filled" in result.output


def test_ingest_of_a_faq_without_categories_says_so(tmp_path):
    faq = tmp_path / "faq.csv"
    faq.write_text(
        "question,answer\nHow do I cancel?,Open Account > Plan.\nHow much is it?,$9 a month.\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["ingest", "--kb", str(faq)])
    assert result.exit_code == 0, result.output
    assert "no categories, 2 topics" in result.output
    assert "\n  -  " not in result.output, "no row for a missing category"
    # A newcomer read "(BUSINESS_PROFILE)" as a profile of their own: it is the demo's.
    assert "\nthe demo profile " in result.output
    assert "for your own, copy data/business-profile-template.yaml" in result.output


def test_ingest_names_the_duplicates_it_drops(tmp_path):
    """A newcomer's help centre lost 9 sections to duplicates, and ingest gave only the
    count: each is named, with the entry kept in its place."""
    faq = tmp_path / "faq.csv"
    faq.write_text(
        "id,question,answer\ncancel,How do I cancel?,Open Account > Plan.\n"
        "cancel-again,How do I cancel?,Open Account > Plan.\nprice,How much is it?,$9.\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["ingest", "--kb", str(faq)])
    assert result.exit_code == 0, result.output
    assert "1 duplicates dropped" in result.output
    assert "duplicate dropped: cancel-again (same question and answer as cancel)" in result.output


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["ask"], "give a QUESTION (in quotes) or --random"),
        (["ask", "   "], "give a QUESTION (in quotes) or --random"),
        (["ask", "how do I cancel?", "--random"], "give a QUESTION or --random, not both"),
    ],
)
def test_ask_without_one_question_says_what_it_needs(arguments, message):
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2 and message in result.output, result.output


def _ingest_with_profile(tmp_path, profile):
    """`assistant ingest` of a one-entry FAQ with BUSINESS_PROFILE=`profile`."""
    kb = tmp_path / "faq.csv"
    kb.write_text("question,answer\nHow do I pay?,By card.\n", encoding="utf-8")
    return CliRunner().invoke(
        main, ["ingest", "--kb", str(kb)], env={"BUSINESS_PROFILE": str(profile)}
    )


def test_ingest_warns_of_reply_placeholders_the_profile_leaves_empty(settings, tmp_path):
    """A profile without a phone line: the assistant's declines and handoffs leave the phone
    out, and `ingest` says so rather than claim every placeholder is filled."""
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "company_name: Tunewave\nplaceholders:\n  COMPANY_NAME: Tunewave\n"
        "  CUSTOMER_SUPPORT_EMAIL: support@tunewave.example\n  CUSTOMER_SUPPORT_PHONE: ''\n"
        "  CUSTOMER_SUPPORT_HOURS: 24/7\n",
        encoding="utf-8",
    )
    result = _ingest_with_profile(tmp_path, profile)
    assert result.exit_code == 0, result.output
    assert "note: the business profile leaves 2 of the assistant's own" in result.output
    assert "{{LIVE_CHAT_URL}}: left out\n  {{CUSTOMER_SUPPORT_PHONE}}: left out" in result.output
    assert "every placeholder of the knowledge base is filled" in result.output
    assert "every placeholder is filled" not in result.output
    assert "\nbusiness profile " in result.output and "for your own" not in result.output


def test_a_business_profile_path_that_leads_nowhere_is_an_error(tmp_path):
    """A newcomer's mistyped BUSINESS_PROFILE gave a warning, replies speaking for "our
    service", and exit status 0."""
    missing = tmp_path / "nosuch-profile.yaml"
    result = _ingest_with_profile(tmp_path, missing)
    assert result.exit_code == 1, result.output
    assert f"BUSINESS_PROFILE={missing}: no such file" in result.output
    # Empty, as `BUSINESS_PROFILE=` in a .env file leaves it, is unset: the demo's profile.
    result = _ingest_with_profile(tmp_path, "")
    assert result.exit_code == 0 and "\nthe demo profile " in result.output


def test_ingest_warns_of_the_template_s_example_profile(settings, tmp_path):
    """A copy of the template left unedited speaks for its made-up bike shop: ingest says so."""
    profile = tmp_path / "my-profile.yaml"
    template = settings.demo_kb.parent / "business-profile-template.yaml"
    profile.write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    result = _ingest_with_profile(tmp_path, profile)
    assert result.exit_code == 0, result.output
    assert "warning: the business profile is the template's example" in result.output
    # Renamed, but still sending customers to the template's made-up email address.
    renamed = template.read_text(encoding="utf-8").replace("Spoke & Chain Cycles", "Inkwell")
    profile.write_text(renamed, encoding="utf-8")
    result = _ingest_with_profile(tmp_path, profile)
    assert "warning: the business profile is the template's example" in result.output
    profile.write_text("company_name: Inkwell\n", encoding="utf-8")
    result = _ingest_with_profile(tmp_path, profile)
    assert result.exit_code == 0 and "template's example" not in result.output


def test_ingest_rejects_a_bad_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    result = CliRunner().invoke(main, ["ingest", "--kb", str(bad)])
    assert result.exit_code != 0 and "expected question,answer columns" in result.output


@pytest.mark.parametrize(
    "content, skipped",
    [("question,answer\n", ""), ("question,answer\nWhere?,\n,Here.\n", "(2 rows without")],
)
def test_ingest_refuses_a_kb_without_entries(tmp_path, content, skipped):
    """A header alone, or rows that all lack a question or an answer: one line, exit 1, no
    index built for a service that would decline every question."""
    empty = tmp_path / "faq.csv"
    empty.write_text(content, encoding="utf-8")
    for extra in ([], ["--ids"]):
        result = CliRunner().invoke(main, ["ingest", "--kb", str(empty), *extra])
        assert result.exit_code == 1, result.output
        assert f"cannot be loaded: {empty}: no entries" in result.output
        assert skipped in result.output
        assert "0 entries" not in result.output and len(result.output.splitlines()) == 1


@pytest.mark.parametrize("problem", ["missing", "columns"])
def test_every_command_that_loads_the_kb_gives_one_line_for_a_bad_one(tmp_path, problem):
    """KB_PATH or --kb naming a missing file or one with other columns: the error in one
    line and exit 1 from `ask` as from `serve` and `ingest`, not a traceback."""
    kb = tmp_path / "faq.csv"
    if problem == "columns":
        kb.write_text("q,a\nhow?,like this\n", encoding="utf-8")
    why = "no such file or folder" if problem == "missing" else "expected question,answer"
    commands = [
        (["ask", "how do I cancel?"], {"KB_PATH": str(kb), "LLM_PROVIDER": "extractive"}),
        (["ingest", "--kb", str(kb)], {}),
        (["eval", "outcomes", "--kb", str(kb)], {}),
        (["bench", "retrieval", "--kb", str(kb), "--docs", "100"], {}),
        (["bench", "llm"], {"KB_PATH": str(kb), "LLM_PROVIDER": "extractive"}),
    ]
    if problem == "columns":  # --data must exist
        commands.append(
            (["eval", "split", "--data", str(kb), "--kb-out", "k", "--queries-out", "q"], {})
        )
    for args, env in commands:
        result = CliRunner().invoke(main, args, env={"DATA_DIR": str(tmp_path), **env})
        assert result.exit_code == 1, (args, result.output)
        (line,) = result.output.splitlines()
        assert line.startswith(f"Error: the knowledge base cannot be loaded: {kb}: {why}"), line


def test_ingest_reads_the_shared_dataset_when_present(settings):
    if not BITEXT_DEV.is_file():
        pytest.skip("../shared/data is absent on this machine")
    result = CliRunner().invoke(main, ["ingest", "--kb", str(BITEXT_DEV)])
    assert result.exit_code == 0, result.output
    assert "975 entries" in result.output and "8 categories, 25 intents" in result.output
    assert "(intent model;" in result.output
