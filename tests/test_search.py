import minsearch
import pytest

from assistant.search import DEFAULT_BOOSTS, Retriever, _record


@pytest.fixture(scope="module")
def retriever(assistant) -> Retriever:
    return assistant.retriever


@pytest.mark.parametrize(
    "question, intent",
    [
        ("how do I cancel my subscription?", "cancel_subscription"),
        ("I forgot my password", "recover_password"),
        ("what payment methods do you accept", "payment_methods"),
        ("I want to talk to a real person", "human_agent"),
    ],
)
def test_plain_questions_find_their_intent(retriever, question, intent):
    result = retriever.search(question, k=5)
    assert result.intent == intent
    assert 0 < result.confidence <= 1
    scores = [hit.score for hit in result.hits]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5


def test_ranking_matches_minsearch(retriever):
    """Our scores come from the minsearch index's own vectors; the order must be minsearch's."""
    index = minsearch.Index(
        text_fields=["question", "intent_text", "response"], keyword_fields=["intent", "category"]
    )
    index.fit([_record(d) for d in retriever.documents])
    for query in ["cancel my plan", "subtitles on my TV", "charged twice this month"]:
        expected = index.search(
            query, boost_dict=dict(DEFAULT_BOOSTS), num_results=5, output_ids=True
        )
        got = retriever.search(query, k=5).hits
        assert [retriever.documents[e["_id"]].id for e in expected] == [h.document.id for h in got]


def test_no_category_filter_is_applied(retriever):
    # A question spanning two categories still returns documents from both.
    result = retriever.search("cancel my subscription and report a double charge", k=10)
    assert {"SUBSCRIPTION", "PAYMENT"} <= {hit.document.category for hit in result.hits}


def test_gibberish_returns_nothing(retriever):
    result = retriever.search("zzqx vvkk", k=5)
    assert result.hits == [] and result.intent is None and result.confidence == 0.0
