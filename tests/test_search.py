from dataclasses import replace

import minsearch
import numpy as np
import pytest

from assistant import knowledge
from assistant.retrieval.retriever import RetrievalSettings, Retriever, _record
from tests.conftest import LABELLED_KB


@pytest.fixture(scope="module")
def retriever(settings) -> Retriever:
    """The intent-model path: a KB in Bitext's format, five phrasings per intent."""
    from assistant.rag import build_retriever

    return build_retriever(settings, knowledge.read_file(LABELLED_KB))


@pytest.mark.parametrize(
    "question, intent",
    [
        ("how do I cancel my subscription?", "cancel_subscription"),
        ("cancle my subscripton", "cancel_subscription"),
        ("I forgot my password", "recover_password"),
        ("what payment methods do you accept", "payment_methods"),
        ("wanna talk to human", "human_agent"),
        ("subtitles in Spanish on my TV?", "change_subtitle_language"),
        ("my card was charged twice", "report_payment_issue"),
    ],
)
def test_customer_phrasings_find_their_intent(retriever, question, intent):
    result = retriever.search(question, k=5)
    assert result.intent == intent and result.in_scope
    assert 0 < result.confidence <= 1
    assert len(result.hits) == 5
    assert result.hits[0].document.intent == intent


@pytest.mark.parametrize(
    "question",
    [
        "what's the weather like tomorrow",
        "how do I bake sourdough bread",
        "book me a flight to Lisbon",
        "what is the capital of Australia",
    ],
)
def test_off_topic_questions_are_out_of_scope(retriever, question):
    assert not retriever.search(question).in_scope


def test_hits_lead_with_the_intent_and_keep_runner_ups(retriever):
    hits = retriever.search("how do I cancel my subscription?", k=5).hits
    intents = [hit.document.intent for hit in hits]
    assert intents[:3] == ["cancel_subscription"] * 3
    assert len(set(intents[3:]) - {"cancel_subscription"}) == 2
    top = [hit.score for hit in hits[:3]]
    assert top == sorted(top, reverse=True)


def test_lexical_mode_ranks_like_minsearch(retriever):
    """Without the intent model, the order is exactly minsearch's own."""
    lexical = Retriever(
        retriever.documents, RetrievalSettings(use_intent_model=False, hybrid=False)
    )
    index = minsearch.Index(
        text_fields=["question", "intent_text", "response"], keyword_fields=["intent", "category"]
    )
    index.fit([_record(d) for d in retriever.documents])
    boosts = dict(RetrievalSettings().boosts)
    for query in ["cancel my plan", "subtitles on my TV", "charged twice this month"]:
        expected = index.search(query, boost_dict=boosts, num_results=5, output_ids=True)
        got = lexical.search(query, k=5).hits
        assert [retriever.documents[e["_id"]].id for e in expected] == [h.document.id for h in got]


def test_saved_index_answers_the_same(retriever, tmp_path):
    path = tmp_path / "index.pkl"
    retriever.save(path)
    loaded = Retriever.load(path, retriever.encoder)
    for query in ["cancel my plan", "is there a free trial", "recipe for pancakes"]:
        assert loaded.search(query) == retriever.search(query)


def test_settings_round_trip_and_reject_unknown_keys(tmp_path):
    path = tmp_path / "retrieval.json"
    tuned = replace(RetrievalSettings(), temperature=6.0, handoff_threshold=0.3)
    tuned.save(path)
    assert RetrievalSettings.load(path) == tuned
    assert RetrievalSettings.load(tmp_path / "missing.json") == RetrievalSettings()
    path.write_text('{"temprature": 2}')
    with pytest.raises(ValueError, match="temprature"):
        RetrievalSettings.load(path)


def test_a_kb_without_intents_still_searches(settings):
    docs = [replace(d, intent="") for d in knowledge.read_csv(LABELLED_KB)]
    result = Retriever(docs).search("how do I cancel my subscription?", k=3)
    assert result.hits and "cancel" in result.hits[0].document.question.lower()


def test_gibberish_in_lexical_mode_returns_nothing(retriever):
    lexical = Retriever(
        retriever.documents, RetrievalSettings(use_intent_model=False, hybrid=False)
    )
    result = lexical.search("zzqx vvkk", k=5)
    assert result.hits == [] and result.intent is None and not result.in_scope


def test_the_intent_model_reads_words_its_phrasings_never_use(settings, tmp_path):
    """Character n-grams know only the KB's own spellings: "my login secret is lost" and
    "does it work on playstation" share no word with the phrasings of their intents. Each
    phrasing's static embedding beside its n-grams finds both, and survives a saved index."""
    from assistant.retrieval import wordllama_encoder

    phrasings = {
        "cancel_subscription": [
            "cancel my subscription", "I want to cancel", "how do I cancel the plan",
            "stop my subscription", "cancellation of my account plan",
        ],
        "recover_password": [
            "reset my password", "I forgot my password", "password recovery",
            "I cannot remember my password", "change a forgotten password",
        ],
        "devices": [
            "which devices are supported", "can I watch on my TV", "supported devices list",
            "what devices can I use", "is the app on game consoles",
        ],
        "report_payment_issue": [
            "I have a payment issue", "problem with my payment", "report a payment problem",
            "my payment failed", "issue with a charge on my card",
        ],
    }  # fmt: skip
    docs = [
        knowledge.Document(f"{intent}-{n}", question, "Steps.", intent, "")
        for intent, questions in phrasings.items()
        for n, question in enumerate(questions)
    ]
    background = knowledge.read_lines(settings.out_of_domain)
    encoder = wordllama_encoder()
    expected = {
        "my login secret is lost": "recover_password",
        "does it work on playstation": "devices",
    }
    plain = Retriever(docs, RetrievalSettings(intent_dense_weight=0), background, encoder)
    assert [plain.search(q).intent for q in expected] != list(expected.values())
    embedded = Retriever(docs, RetrievalSettings(), background, encoder)
    assert [embedded.search(q).intent for q in expected] == list(expected.values())
    embedded.save(tmp_path / "index.pkl")
    loaded = Retriever.load(tmp_path / "index.pkl", encoder)
    assert [loaded.search(q).intent for q in expected] == list(expected.values())


def test_top_k_is_the_start_of_a_stable_sort():
    """The hybrid ranking's top-k selection keeps the full sort's order, ties included (a
    lexical ranking's scores are mostly 0), and ranks a NaN score last, not first."""
    from assistant.retrieval.retriever import top_k

    rng = np.random.default_rng(0)
    for trial in range(900):
        scores = rng.integers(0, 4, rng.integers(1, 40)).astype(float)
        if trial % 3 == 1:
            scores = rng.random(len(scores))
        if trial % 3 == 2:
            scores[rng.random(len(scores)) < 0.3] = np.nan
        k = int(rng.integers(1, 8))
        ranked = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
        assert top_k(scores, k).tolist() == ranked[:k].tolist()


def test_an_index_built_without_wordllama_is_not_loaded_with_it(settings, tmp_path, monkeypatch):
    """Whether the intent model read embeddings is part of the index's cache key: an index
    built while WordLlama would not load is rebuilt once it does, not served without them."""
    from assistant import rag
    from assistant.retrieval import retriever as retriever_module

    local = replace(settings, data_dir=tmp_path)
    docs = knowledge.read_file(LABELLED_KB)
    monkeypatch.setattr(rag, "wordllama_encoder", lambda: None)
    monkeypatch.setattr(retriever_module, "wordllama_encoder", lambda: None)
    assert rag.build_retriever(local, docs).intent_model._embedded(["x"]) is None
    monkeypatch.undo()
    assert rag.build_retriever(local, docs).intent_model._embedded(["x"]) is not None
    assert len(list(local.cache_dir.glob("index-*.pkl"))) == 2
