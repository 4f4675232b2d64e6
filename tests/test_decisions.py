"""Each answer status, decided in decisions.Decisions before any model is called."""

import itertools
import re
from dataclasses import replace

import pytest

from assistant.answers import Turn
from assistant.knowledge import Profile
from assistant.rag import Assistant
from assistant.retrieval import Retriever
from assistant.small_talk import small_talk_kind


@pytest.mark.parametrize(
    "message, kind",
    [
        ("hi", "greeting"),
        ("Hello there!", "greeting"),
        ("good morning", "greeting"),
        ("thanks!", "thanks"),
        ("Thank you so much", "thanks"),
        ("that was helpful", "thanks"),
        ("bye", "goodbye"),
        ("ok thanks, bye", "goodbye"),
        ("goodbye and thanks", "thanks"),
        # A satisfied customer, not a frustrated one (a newcomer's trial saw these handed off
        # or declined).
        ("thanks, that helped", "thanks"),
        ("thank you so much, that worked!", "thanks"),
        ("that fixed my problem, thank you", "thanks"),
        ("great answer, thanks a lot for the help", "thanks"),
        ("ok cool thanks", "thanks"),
        ("great, that helped, bye", "goodbye"),
    ],
)
def test_small_talk_is_recognised(message, kind):
    assert small_talk_kind(message) == kind


@pytest.mark.parametrize(
    "message",
    [
        "hi, how do I cancel?",
        "hello I need help with my bill",
        "thanks for nothing",
        "thanks but that did not help",
        "great, how do I cancel?",
        "that worked but now I cannot log in",
        "cancel",
        "history",
        "ok",
        "hithere",
    ],
)
def test_questions_are_not_small_talk(message):
    assert small_talk_kind(message) is None


def test_small_talk_gets_a_short_reply(assistant):
    answer = assistant.answer("Hello!")
    assert answer.status == "small_talk" and answer.sources == [] and answer.intent is None
    assert "Lumen Stream" in answer.answer and "{{" not in answer.answer


@pytest.mark.parametrize(
    "message", ["thanks, that helped", "that worked, thank you!", "great, that helped, bye"]
)
def test_a_satisfied_customer_is_not_handed_off(assistant, message):
    assert assistant.answer(message).status == "small_talk"
    assert assistant.answer("that didn't help").handoff_reason == "frustration"


def test_off_topic_is_declined_without_a_kb_answer(assistant):
    answer = assistant.answer("what's a good recipe for lasagna?")
    assert answer.status == "out_of_scope" and answer.sources == []
    assert "Billing" in answer.answer and "support@lumenstream.example" in answer.answer
    assert answer.handoff_reason is None


def test_asking_for_a_person_hands_off_with_contact_details(assistant):
    answer = assistant.answer("I want to speak with a real person")
    assert answer.status == "handoff" and answer.handoff_reason == "requested_human"
    for detail in ("support@lumenstream.example", "+1-555-0100", "lumenstream.example/chat"):
        assert detail in answer.answer


def test_low_confidence_hands_off(assistant):
    retriever: Retriever = assistant.retriever
    cautious = Retriever.__new__(Retriever)
    cautious.__dict__.update(retriever.__dict__)
    cautious.settings = replace(retriever.settings, handoff_threshold=1.01)
    strict = Assistant(cautious, assistant.provider, assistant.profile)
    answer = strict.answer("how do I cancel my subscription?")
    assert answer.status == "handoff" and answer.handoff_reason == "low_confidence"
    assert answer.intent == "cancel-subscription"
    assert assistant.answer("how do I cancel my subscription?").status == "answered"


def test_answered_carries_the_kb_answer(assistant):
    answer = assistant.answer("how do I cancel my subscription?")
    assert answer.status == "answered" and answer.handoff_reason is None
    assert "cancel" in answer.answer.lower() and answer.sources
    assert answer.sources[0].id == "cancel-subscription"


class SplittingProvider:
    """Streams a canned text in tiny pieces, so placeholders arrive split across deltas."""

    name = model = "splitter"
    context_entries = None

    def __init__(self, text: str):
        self.text = text

    def stream(self, messages, *, references=()):
        from assistant.llm import Completion

        for i in range(0, len(self.text), 3):
            yield self.text[i : i + 3]
        yield Completion(self.text, self.model, 1, 1, 0.0)


def test_streamed_deltas_never_carry_placeholders(assistant):
    text = "Go to {{WEBSITE_URL}} and open the {{CONTACT_US_SECTION}} section {"
    streaming = Assistant(assistant.retriever, SplittingProvider(text), assistant.profile)
    parts = list(streaming.stream("how do I cancel my subscription?"))
    deltas = "".join(p for p in parts if isinstance(p, str))
    assert "{{" not in deltas and "https://www.lumenstream.example" in deltas
    assert parts[-1].answer == assistant.profile.fill(text)


class RecordingProvider:
    """Keeps the messages it was sent, to check what the prompt carries."""

    name = model = "recorder"
    context_entries = None

    def __init__(self):
        self.messages = []

    def complete(self, messages, *, references=()):
        from assistant.llm import Completion

        self.messages = list(messages)
        return Completion(references[0], self.model, 1, 1, 0.0)


def test_follow_ups_use_the_previous_question_and_the_prompt_carries_history(assistant):
    from assistant.answers import Turn

    recorder = RecordingProvider()
    chatty = Assistant(assistant.retriever, recorder, assistant.profile)
    history = [Turn(f"old question {n}", f"old answer {n}") for n in range(4)]
    history.append(Turn("how do I change the subtitle language?", "Open the subtitles menu."))
    followed = chatty.answer("and on my TV?", "s-1", history)
    assert followed.status == "answered"
    contents = [m["content"] for m in recorder.messages]
    assert contents[1:-1] == [
        "old question 2",
        "old answer 2",
        "old question 3",
        "old answer 3",
        "how do I change the subtitle language?",
        "Open the subtitles menu.",
    ]
    assert "and on my TV?" in contents[-1]


CONTACT_DETAILS = {
    "LIVE_CHAT_URL": "https://help.example/chat",
    "CUSTOMER_SUPPORT_EMAIL": "help@example.com",
    "CUSTOMER_SUPPORT_PHONE": "+1-555-0123",
    "CUSTOMER_SUPPORT_HOURS": "9 to 5 on weekdays",
}
HOURS = "CUSTOMER_SUPPORT_HOURS"


def _replies(assistant: Assistant, profile: Profile, forwarded: bool) -> list[str]:
    """The handoff, the decline and, when `forwarded`, the reply to a contact given after the
    handoff, as `assistant`'s KB answers for `profile`."""
    replying = Assistant(
        assistant.retriever,
        assistant.provider,
        profile,
        signals=assistant.signals,
        handoffs_forwarded=forwarded,
    )
    handoff = replying.answer("I want to speak with a real person").answer
    texts = [handoff, replying.answer("what's a good recipe for lasagna?").answer]
    if forwarded:
        history = [Turn("a person please", handoff, "handoff")]
        texts.append(replying.answer("my email is jo@example.org", history=history).answer)
    return texts


@pytest.mark.parametrize("forwarded", [False, True])
def test_replies_name_only_the_contact_details_the_profile_fills(assistant, forwarded):
    """A business without a phone line (or chat, email or hours) is never made to offer one:
    with every subset of the profile's contact details, empty or absent, the decline and the
    handoffs name each channel it fills and read as sentences. Hours go with a channel."""
    for size in range(len(CONTACT_DETAILS) + 1):
        for given in itertools.combinations(CONTACT_DETAILS, size):
            values = {name: v if name in given else "" for name, v in CONTACT_DETAILS.items()}
            if size % 2:  # absent, not only empty
                values = {name: value for name, value in values.items() if value}
            profile = Profile("Tunewave", {"COMPANY_NAME": "Tunewave", **values})
            texts = _replies(assistant, profile, forwarded)
            handoff = texts[0]
            assert "the Tunewave support assistant" in texts[1]
            channels = [CONTACT_DETAILS[name] for name in given if name != HOURS]
            hours = HOURS in given and bool(channels or forwarded)
            assert (CONTACT_DETAILS[HOURS] in handoff) == hours, (given, handoff)
            for text in texts:
                assert all(channel in text for channel in channels), (given, text)
                # No placeholder read as words, no channel without its detail, no gap.
                assert not re.search(r"Customer Support|Live Chat|\bat [.,(]|\(\)|  | [.,]", text)
                assert text.endswith("."), (given, text)


@pytest.mark.parametrize("forwarded", [False, True])
@pytest.mark.parametrize("email", ["help@example.com", ""])
@pytest.mark.parametrize("end", ["", "."])
def test_hours_with_parentheses_of_their_own_are_a_sentence_of_their_own(
    assistant, forwarded, email, end
):
    """A newcomer's "8 a.m. to 10 p.m. (phone: weekdays only)" read "(… (phone: weekdays
    only))": such hours are a sentence after the channels, ending in one full stop."""
    hours = f"every day, 8 a.m. to 10 p.m. (phone: weekdays only){end}"
    values = {**CONTACT_DETAILS, HOURS: hours, "CUSTOMER_SUPPORT_EMAIL": email}
    for text in _replies(assistant, Profile("Tunewave", values), forwarded):
        assert f"Our team's hours: {hours.removesuffix('.')}." in text, text
        assert not re.search(r"\(\(|\)\)|\.\.|  | [.,]", text), text


def test_a_profile_value_left_blank_in_yaml_is_empty(tmp_path):
    """`CUSTOMER_SUPPORT_PHONE:` with nothing after it is no phone line, not "None"."""
    from assistant.knowledge import load_profile

    path = tmp_path / "profile.yaml"
    path.write_text("placeholders:\n  CUSTOMER_SUPPORT_PHONE:\n  LIVE_CHAT_URL: x\n")
    profile = load_profile(path)
    assert not profile.filled("CUSTOMER_SUPPORT_PHONE") and profile.filled("live chat url")
    # A knowledge-base answer's placeholder still reads as words, as before.
    assert profile.fill("Call {{CUSTOMER_SUPPORT_PHONE}}.") == "Call Customer Support Phone."
