"""Spelling correction toward the KB's words."""

import pytest

from assistant.retrieval.spelling import Speller

KB = [
    "How do I cancel my subscription?",
    "Which payment methods do you accept? We take cards and PayPal.",
    "Where can I find a receipt for my last payment?",
]


@pytest.mark.parametrize(
    "message, corrected",
    [
        ("how do i cancle my subscripton", "how do i cancel my subscription"),
        ("do u take paypall", "do u take paypal"),
        ("Reciept please", "Receipt please"),
        # English words stay, even close to a KB word: "weak" is not "week".
        ("is the cancel button weak", "is the cancel button weak"),
        # Too short, or holding a digit: left alone.
        ("pls cncl", "pls cncl"),
        ("can i pay on my ps5", "can i pay on my ps5"),
        # No KB word within one edit of an unknown word.
        ("do you take zorgx", "do you take zorgx"),
        # The word's case is kept; a capitalised word inside a sentence is a name.
        ("HOW DO I CANCLE", "HOW DO I CANCEL"),
        ("Cancle it. Reciept too", "Cancel it. Receipt too"),
        ("is Paypall a bank", "is Paypall a bank"),
    ],
)
def test_misspelt_words_become_kb_words(message, corrected):
    assert Speller(KB).correct(message) == corrected


def test_json_alternates_that_are_not_strings_are_left_out():
    from assistant.knowledge import alternates

    assert alternates([1, None, {"a": 1}, ["n"], "ok"]) == ("ok",)
    assert alternates(5) == alternates(None) == ()
