import csv
import http.server
import json
import threading
from pathlib import Path

import pytest

from assistant import knowledge
from assistant.config import PROJECT_ROOT
from assistant.knowledge import Document, KnowledgeBaseError, Profile, humanize
from assistant.replies import unfilled
from tests.conftest import BITEXT_DEV, free_port

CATEGORIES = {
    "CONTACT": {"customer_service", "human_agent"},
    "CONTENT": {"report_copyright_infringement", "report_inappropiate_content"},
    "FUNCTIONING": {"devices", "general_use", "quickstart_guide"},
    "PAYMENT": {"pay", "payment_methods", "report_payment_issue"},
    "PLATFORM": {"fees"},
    "PROGRAM_SCHEDULE": {"program_schedule", "releases"},
    "SETTINGS": {
        "change_language",
        "change_subtitle_language",
        "parental_control",
        "recover_password",
    },
    "SUBSCRIPTION": {
        "cancel_subscription",
        "change_subscription",
        "free_trial",
        "premium_subscription",
        "renew_subscription",
        "subscribe",
        "subscription",
        "subscription_prices",
    },
}


@pytest.fixture(scope="module")
def demo(settings) -> list[Document]:
    return knowledge.read_csv(settings.demo_kb)


@pytest.fixture(scope="module")
def profile(settings) -> Profile:
    return knowledge.load_profile(settings.profile_path)


def test_demo_kb_is_a_help_centre_faq(demo):
    """One entry per topic, across the help centre's categories, each with its URL."""
    categories = {doc.category for doc in demo}
    assert len(demo) >= 60 and len(categories) == 10
    assert len({doc.id for doc in demo}) == len(demo)
    assert len({doc.question for doc in demo}) == len(demo)
    assert all(doc.url.startswith("https://") and not doc.intent for doc in demo)
    assert any("{{" in doc.response for doc in demo)


def test_ids_are_stable_short_hashes_and_unique(tmp_path):
    path = tmp_path / "kb.csv"
    path.write_text("question,answer\nq1,a1\nq2,a2\n", encoding="utf-8")
    docs, again = knowledge.read_csv(path), knowledge.read_csv(path)
    assert [d.id for d in docs] == [d.id for d in again]
    assert len({d.id for d in docs}) == 2 and all(len(d.id) == 12 for d in docs)
    assert knowledge.document_id("q", "r", "i") != knowledge.document_id("q", "r", "j")


def test_exact_duplicates_are_removed(tmp_path: Path):
    path = tmp_path / "kb.csv"
    rows = [
        ["instruction", "intent", "category", "tags", "response"],
        ["how to pay", "pay", "PAYMENT", "B", "Pay here."],
        ["how to pay", "pay", "PAYMENT", "B", "Pay here."],
        ["how to pay?", "pay", "PAYMENT", "B", "Pay here."],
    ]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    docs = knowledge.read_csv(path)
    assert [d.question for d in docs] == ["how to pay", "how to pay?"]


def test_a_dropped_duplicate_gives_its_alternates_to_the_entry_kept(tmp_path: Path):
    """A reviewer's: a duplicate's alternate questions vanished with it, silently."""
    path = tmp_path / "kb.csv"
    path.write_text(
        "id,question,answer,alternates\nrefunds,Refunds?,Within 14 days.,money back?\n"
        "refunds-b,Refunds?,Within 14 days.,can I get a refund | money back?\n",
        encoding="utf-8",
    )
    [doc] = knowledge.read_csv(path)
    assert doc.id == "refunds" and doc.alternates == ("money back?", "can I get a refund")


def test_json_list_keeps_given_ids(tmp_path: Path):
    path = tmp_path / "kb.json"
    path.write_text(
        json.dumps(
            [
                {
                    "id": "abc123",
                    "question": "q1",
                    "response": "r1",
                    "intent": "pay",
                    "category": "PAYMENT",
                },
                {"instruction": "q2", "response": "r2", "intent": "fees", "category": "PLATFORM"},
            ]
        )
    )
    docs = knowledge.read_file(path)
    assert docs[0].id == "abc123"
    assert docs[1].id == knowledge.document_id("q2", "r2", "fees")


def test_a_spreadsheet_export_with_capitalised_headers_loads(tmp_path: Path):
    """Excel and Google Sheets write `Question,Answer`, Excel with a byte-order mark; a
    header cell may carry a stray space. JSON keys match the same way."""
    path = tmp_path / "faq.csv"
    path.write_bytes(
        "\ufeffQuestion, Answer ,CATEGORY\nHow do I pay?,By card.,Billing\n".encode("utf-8")
    )
    docs = knowledge.read_file(path)
    assert [(d.question, d.response, d.category) for d in docs] == [
        ("How do I pay?", "By card.", "Billing")
    ]
    bitext = tmp_path / "bitext.csv"
    bitext.write_text("Instruction,Intent,Response\nhow to pay,pay,By card.\n", encoding="utf-8")
    assert [(d.question, d.intent) for d in knowledge.read_file(bitext)] == [("how to pay", "pay")]
    listed = tmp_path / "faq.json"
    listed.write_bytes(
        ("\ufeff" + json.dumps([{" Question": "How do I pay?", "Answer": "By card."}])).encode()
    )
    assert [d.response for d in knowledge.read_file(listed)] == ["By card."]


@pytest.mark.parametrize(
    "content, suffix",
    [
        ("not,a,kb\n1,2,3\n", ".csv"),
        ('{"question": "not a list"}', ".json"),
        ('[{"question": "no response"}]', ".json"),
        ("[1, 2", ".json"),
    ],
)
def test_bad_files_raise_a_clear_error(tmp_path: Path, content, suffix):
    path = tmp_path / f"kb{suffix}"
    path.write_text(content)
    with pytest.raises(KnowledgeBaseError):
        knowledge.read_file(path)


def test_auto_falls_back_to_demo_when_the_dataset_is_unreachable(settings, tmp_path):
    kb = knowledge.load(
        "auto",
        demo=settings.demo_kb,
        cache_dir=tmp_path,
        url=f"http://127.0.0.1:{free_port()}/data.csv",
        timeout=2,
    )
    assert kb.source == "demo" and len(kb) >= 60


def test_download_is_cached_and_reused(settings, tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    (served / "data.csv").write_bytes(settings.demo_kb.read_bytes())
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=served, **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/data.csv"
    cache = tmp_path / "cache"
    try:
        first = knowledge.load("auto", demo=settings.demo_kb, cache_dir=cache, url=url)
    finally:
        server.shutdown()
        server.server_close()
    assert first.source == str(cache / f"{knowledge.cache_key(url)}-data.csv")
    second = knowledge.load("auto", demo=settings.demo_kb, cache_dir=cache, url=url, timeout=1)
    assert second.source == first.source and len(second) == len(first)


@pytest.mark.parametrize(
    "name, words",
    [
        ("CONTACT_US_SECTION", "Contact Us section"),
        ("SUBMIT_BUTTON", "Submit button"),
        ("WEBSITE_URL", "Website Url"),
        ("LANGUAGE", "Language"),
    ],
)
def test_humanize(name, words):
    assert humanize(name) == words


def test_fill_uses_profile_values_then_words():
    profile = Profile("Acme", {"WEBSITE_URL": "https://acme.example"})
    text = "Visit {{WEBSITE_URL}}, open the {{CONTACT_US_SECTION}} section, {{ odd name }} {{"
    assert (
        profile.fill(text) == "Visit https://acme.example, open the Contact Us section, Odd Name "
    )


def test_a_company_named_the_something_is_not_given_a_second_article():
    profile = Profile("The Daily Ledger", {"COMPANY_NAME": "The Daily Ledger"})
    assert profile.fill("I'm the {{COMPANY_NAME}} assistant.") == "I'm The Daily Ledger assistant."
    assert profile.fill("The {{COMPANY_NAME}} app") == "The Daily Ledger app"


def test_every_demo_response_is_filled(demo, profile):
    for doc in demo:
        filled = profile.fill(doc.response)
        assert "{{" not in filled and "}}" not in filled, doc.id
    # The profile, not the fallback wording, fills the demo KB's own placeholders.
    used = {m for doc in demo for m in knowledge._PLACEHOLDER.findall(doc.response)}
    assert used <= set(profile.placeholders)


@pytest.mark.skipif(not BITEXT_DEV.is_file(), reason="../shared/data is absent on this machine")
def test_every_bitext_dev_response_is_filled(profile):
    docs = knowledge.read_csv(BITEXT_DEV)
    assert len(docs) > 900
    for doc in docs:
        for text in (doc.response, doc.question):
            assert "{{" not in profile.fill(text), doc.id


@pytest.mark.skipif(not BITEXT_DEV.is_file(), reason="../shared/data is absent on this machine")
def test_the_profile_names_every_bitext_placeholder(profile):
    """Filled from the profile, not from the placeholder's own name ("Section Name")."""
    used = knowledge.placeholders(knowledge.read_csv(BITEXT_DEV))
    assert set(used) <= set(profile.placeholders), sorted(set(used) - set(profile.placeholders))
    assert "Section Name" not in profile.fill("the {{SECTION_NAME}} section")


def test_the_profile_template_is_the_readmes_short_form_and_fills_every_reply():
    """The quickstart copies the template: it must name a contact for every reply, and the
    README must show what it holds."""
    template = PROJECT_ROOT / "data" / "business-profile-template.yaml"
    profile = knowledge.load_profile(template)
    assert profile.company_name == "Spoke & Chain Cycles"
    assert unfilled(profile) == []
    settings_lines = [line for line in template.read_text().splitlines() if line[:1] != "#"]
    assert "\n".join(settings_lines) in (PROJECT_ROOT / "README.md").read_text()
