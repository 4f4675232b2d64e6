"""The decision before any model is called: small talk, a contact passed on, a handoff (a
request for a person, frustration, another language), a decline (out of scope), or an answer
from one or two retrieved entries."""

from __future__ import annotations

import functools
import re
import secrets
import uuid
from collections.abc import Sequence

from assistant.answers import CONTACT, Answer, Turn, handed_off, sources_of
from assistant.knowledge import Profile
from assistant.languages import only_in
from assistant.privacy import contact_details
from assistant.replies import Replies, kb_topics
from assistant.retrieval import Hit, Retriever, SearchResult
from assistant.retrieval.query import (
    is_request,
    name_pattern,
    questions,
    refers_back,
    sentences,
    without_joiner,
    without_name,
)
from assistant.retrieval.spelling import english_words
from assistant.signals import (
    CAPITALS,
    FRUSTRATION,
    HandoffSignals,
    emphatic,
    foreign_language,
    language_of,
    vocabulary,
)
from assistant.small_talk import SMALL_TALK_REPLIES, small_talk_kind

UNSURE_PREFIX = "I want to be sure you get the right answer. "
HUMAN_INTENT = "human_agent"
# A follow-up this short ("and the yearly one?") may be retrieved together with the previous
# question (see Decisions._search).
FOLLOW_UP_WORDS = 6
# A follow-up this confident alone is its own question.
FOLLOW_UP_SURE = 0.5
# py3langid's probability of another language above which a message is not spell-corrected:
# "passwort vergessen" is German at 0.47; none of our 28 English typo questions reaches 0.4.
SPELLING_OTHER_LANGUAGE = 0.4
# A message's second question this confident alone is answered too (Decisions._two_topics):
# at 0.5, 2 of StackFAQ's 630 one-question queries were given a second entry, at 0.6 none;
# the second questions of two-question messages (our own set, newcomers' FAQs) scored 0.66-1.
SECOND_QUESTION_SURE = 0.6
# The most parts of a message (its questions, and a declined one's other sentences) searched
# alone: a 2,000-character rant has ~200 sentences.
MAX_PARTS = 8
# A statement of a declined message this confident alone answers for it, on any topic, when
# it stands alone as a question must (Decisions._stands_alone: leaning on nothing beside it,
# naming a word of the KB): a statement says why as often as what, so it must be surer than
# a question. A complaint's "the show freezes and spins every few minutes" found the buffering
# entry at 0.99; "I pay for Premium and get a worse picture than free TV" the yearly plan at 0.89.
STATEMENT_SURE = 0.9
_WORD = re.compile(r"\w+")
# A capitalised word after another word of its sentence: a name ("on your Roku or Apple TV").
_NAMED = re.compile(r"(?<![.!?])\s+([A-Z][A-Za-z]{3,})")


def _normalized(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


class Decisions:
    """Decides how to reply to one customer message (`decide`), before any model is called.

    `signals` detects requests for a person and frustration on any KB (None: never).
    `handoffs_forwarded`: handed-off conversations are posted to the team's helpdesk
    (HANDOFF_WEBHOOK_URL), and the handoff reply promises a person's reply; a contact the
    customer gives after the handoff is passed on too (status `contact`). `phone_region`: the
    country whose national format a phone number without `+` is read in (PII_PHONE_REGION).
    A question in another language is searched in translation only where `translates` (the
    answer model's work: `rag.Assistant`); here, it is handed off for its language.
    """

    translates = False

    def __init__(
        self,
        retriever: Retriever,
        profile: Profile,
        k: int = 5,
        signals: HandoffSignals | None = None,
        handoffs_forwarded: bool = False,
        phone_region: str = "US",
    ):
        self.retriever = retriever
        self.handoffs_forwarded = handoffs_forwarded
        self.phone_region = phone_region
        self.handoff_threshold = retriever.settings.handoff_threshold
        self.profile = profile
        self.k = k
        self.signals = signals
        docs = retriever.documents
        self.replies = Replies.for_profile(profile, kb_topics(docs), handoffs_forwarded)
        self.language = language_of(" ".join(d.question for d in docs[:300]))[0] if docs else "en"
        self._known_words = vocabulary([text for d in docs for text in d.phrasings])
        self._name = (
            name_pattern(profile.company_name, self._known_words, english_words())
            if profile.named
            else None
        )
        encoder = retriever.encoder
        self.multilingual = bool(encoder is not None and encoder.multilingual)

    @functools.cached_property
    def _acronyms(self) -> frozenset[str]:
        """The upper-case forms of the words the KB writes in capitals ("HDMI") or capitalised
        within a sentence ("Roku", "Amazon"), and of the company's name: names, not shouts.
        Read at the first message that needs them, not at start: a scan of every answer,
        which grows with the KB (57 ms a megabyte of text on our machine)."""
        return frozenset(
            word.upper()
            for d in self.retriever.documents
            for text in (*d.phrasings, d.response)
            for word in (*CAPITALS.findall(text), *_NAMED.findall(text))
        ) | frozenset(word.upper() for word in _WORD.findall(self.profile.company_name))

    def _search(self, question: str, history: Sequence[Turn]) -> SearchResult:
        """The question's own retrieval, unless it is a short follow-up that is unsure alone
        (out of scope, below FOLLOW_UP_SURE, or leaning on the earlier topic with a pronoun or
        "what about" while it scores below a typical question of the KB) and that the previous
        question makes more confident (a declined question counts as confidence 0) without
        leaving the topics the follow-up points to:

        - a follow-up in scope alone: the merged top entry is among its own hits, or its entry
          names a distinctive word of the follow-up, or the follow-up leans on the earlier
          topic ("how long does it take?" after a refund question);
        - a follow-up out of scope alone: its words besides function words are all words the
          KB uses ("for how long?", "is there a limit?"; not "yes" or "?", which have none),
          or the merged top entry names a distinctive word of it, or is already its own best
          hit at FOLLOW_UP_SURE confidence. Being among its five hits says nothing there:
          on a 30-entry KB they are a sixth of the topics.

        "what about sundays?" after an opening-hours question and "what about premium?" after
        a question on the basic plan's screens are answered from the earlier topic; "can i
        watch on my ps5?" after a password question, "what's the weather in Paris?" after a
        cancel question and "who is the president?" after a student-discount one are not. A
        question of words the KB knows ("what time is it?") is still read as a follow-up."""
        result = self.retriever.search(question, self.k)
        short = len(question.split()) <= FOLLOW_UP_WORDS
        # Leaning on the earlier topic counts only for a match weaker than a typical question
        # of the KB makes: "is it available on xbox?" names its own topic, and finds it well.
        typical = self.retriever.typical_score
        refers = bool(
            typical is not None and result.scope_score < typical and refers_back(question)
        )
        unsure = not result.in_scope or result.confidence < FOLLOW_UP_SURE or refers
        if not (history and short and unsure and result.hits):
            return result
        earlier = without_name(history[-1].question, self._name)
        joined = self.retriever.search(f"{earlier} {question}", self.k)
        alone = result.confidence if result.in_scope else 0.0
        if not (joined.in_scope and joined.hits and joined.confidence > alone):
            return result
        top = joined.hits[0].document
        if result.in_scope:
            points_there = refers or top.id in {hit.document.id for hit in result.hits}
        else:
            points_there = self.retriever.speaks_only_of_the_kb(question) or (
                top.id == result.hits[0].document.id and result.confidence >= FOLLOW_UP_SURE
            )
        if points_there or self.retriever.shares_words(question, top):
            return joined
        return result

    def searched(self, question: str) -> str:
        """The text a message is searched as, before any translation: without the company's
        name (`query.without_name`), and spelling corrected (`_spelled`) unless it reads as
        another language (`signals.foreign_language`). `assistant eval retrieval` measures
        retrieval on it, as customers get it."""
        return self._read(question)[1]

    def _read(self, question: str) -> tuple[str | None, str]:
        """The language `question` reads as when not the KB's (`signals.foreign_language`),
        or None, and the text it is searched as (`searched`)."""
        language = foreign_language(question, self.language, self._known_words)
        unnamed = without_name(question, self._name)
        return language, unnamed if language else self._spelled(unnamed)

    def _spelled(self, question: str) -> str:
        """`question` with its misspellings corrected (`retrieval.spelling`), unless it may be
        in another language: `foreign_language` lets short messages and ones made mostly of
        KB words through ("quiero cancelar" would become "quiero cancel"), so any leaning of
        the identifier toward another language, at SPELLING_OTHER_LANGUAGE, leaves it as is."""
        code, probability = language_of(question)
        if code != self.language and probability >= SPELLING_OTHER_LANGUAGE:
            return question
        return self.retriever.speller.correct(question)

    def _handoff_reason(
        self, question: str, history: Sequence[Turn], searched: str | None = None
    ) -> str | None:
        """Why this message goes to a person before any retrieval, or None. The signals read
        `searched` (the message as searched: without the company's name, and spelling
        corrected or translated) when given; a repeat is the message as asked, since history
        keeps messages as asked."""
        signal = self.signals.detect(searched or question) if self.signals else None
        if signal:
            return "requested_human" if signal != FRUSTRATION else "frustration"
        asked = _normalized(question)
        if any(_normalized(turn.question) == asked for turn in history):
            return "frustration"
        return None

    def _angry_question(
        self, asked: list[str], alone: list[SearchResult], history: Sequence[Turn]
    ) -> SearchResult | None:
        """For a message read as frustrated, the retrieval of its best-scoring question that
        is in scope on its own (`asked`, the message's questions; `alone`, their retrievals
        when there are several), when the message opens the conversation (small talk aside);
        else None. Its anger is then at the company's service, not at the assistant's replies
        ("I've tried to cancel three times and I'm sick of it. Just tell me how to cancel"),
        and the message is answered: as a whole, or from this question when the whole is
        declined. After any other turn it goes to a person, as does a repeated question.
        The whole message in scope is not enough: on an 8-entry FAQ, "forget it" found the
        password entry."""
        if any(turn.status != "small_talk" for turn in history):
            return None
        found = alone or [self.retriever.search(part, self.k) for part in asked]
        found = [result for result in found if result.in_scope and result.hits]
        return max(found, key=lambda result: result.scope_score) if found else None

    def _contact_after_handoff(self, question: str, history: Sequence[Turn]) -> str | None:
        """The emails and phone numbers (E.164) of `question`, joined for the reply, when the
        session was handed off to a helpdesk that gets them; else None. The whole message is
        passed on, whatever else it says: the conversation is a person's now. With
        PII_MASKING on the message arrives masked, holds none, and is answered as any other."""
        if not (self.handoffs_forwarded and handed_off(history)):
            return None
        emails, phones = contact_details(question, self.phone_region)
        return " and ".join(emails + phones) or None

    def decide(
        self, question: str, session_id: str | None = None, history: Sequence[Turn] = ()
    ) -> tuple[Answer, list[Hit], int]:
        """Everything before generation: the answer's status, the hits to generate from (none
        when the reply is already decided) and how many of the first hits answer a question
        of the message: 2 when it asks two about different entries (see `_two_topics`)."""
        chat = small_talk_kind(question)
        answer = Answer(
            conversation_id=uuid.uuid4().hex,
            # Issued here when the client sent none: unguessable, so the id alone is a
            # session's only handle, even among callers sharing one key.
            session_id=session_id or secrets.token_urlsafe(16),
            question=question,
            answer="",
            model_used="none",
            provider="none",
            intent=None,
            category=None,
            confidence=0.0,
            status="answered",
        )
        contact = self._contact_after_handoff(question, history)
        if contact:
            answer.status = CONTACT
            answer.answer = self.replies.contact.replace("{contact}", contact)
            return answer, [], 0
        if chat:
            answer.status, answer.answer = "small_talk", SMALL_TALK_REPLIES[chat]
            return answer, [], 0
        # Language first: character n-grams of another script look like the few handoff
        # examples in that script more than like the KB's questions.
        language, searched = self._read(question)
        foreign = None if self.multilingual else language
        if foreign and self.translates:
            translation = self._translate(question, answer)
            if translation:
                searched, foreign = without_name(translation, self._name), None
        reason = None if foreign else self._handoff_reason(question, history, searched)
        # Each question of a message of several, searched alone once: for an angry message's
        # question, for the one in scope when the whole is declined, and for a second topic
        # when it is answered.
        asked = questions(searched)[:MAX_PARTS]
        alone = (
            [self.retriever.search(part, self.k) for part in asked]
            # Not for a message already going to a person for its language or a request.
            if len(asked) > 1 and not foreign and reason in (None, "frustration")
            else []
        )
        angry = self._angry_question(asked, alone, history) if reason == "frustration" else None
        if angry is not None:
            reason = None
        if reason or foreign:
            answer.status, answer.handoff_reason = "handoff", reason or "language"
            prefix = only_in(self.language, foreign) if foreign else ""
            answer.answer = prefix + self.replies.handoff
            return answer, [], 0
        result = self._search(searched, history)
        # The rest of a rant can take the whole message under the gate; its question is in
        # scope alone. The whole is kept when in scope: "Just tell me how to actually cancel
        # this thing before you charge me again!!" alone finds the refund entry.
        if angry is not None and not result.in_scope:
            result = angry
        if not result.in_scope:
            result = self._part_in_scope(searched, asked, alone, result) or result
        answer.intent, answer.category = result.intent, result.category
        answer.confidence = result.confidence
        answer.sources = sources_of(result.hits)
        if (not result.in_scope or not result.hits) and emphatic(
            without_name(question, self._name), self._acronyms
        ):
            # An angry complaint declined is a customer left alone with a problem the KB may
            # cover in other words (its nearest entry is often the right one, under the gate).
            answer.status, answer.handoff_reason = "handoff", "frustration"
            answer.answer, answer.sources = self.replies.handoff, []
        elif not result.in_scope or not result.hits:
            answer.status, answer.answer = "out_of_scope", self.replies.out_of_scope
            answer.sources = []
        elif result.intent == HUMAN_INTENT:
            answer.status, answer.handoff_reason = "handoff", "requested_human"
            answer.answer = self.replies.handoff
        elif result.confidence < self.handoff_threshold:
            answer.status, answer.handoff_reason = "handoff", "low_confidence"
            answer.answer = UNSURE_PREFIX + self.replies.handoff
        else:
            pair = self._two_topics(alone, result.hits, asked)
            if pair is None:
                return answer, result.hits, 1
            ids = {hit.document.id for hit in pair}
            rest = [hit for hit in result.hits if hit.document.id not in ids]
            hits = [*pair, *rest][: max(len(result.hits), 2)]
            answer.intent, answer.category = pair[0].document.topic, pair[0].document.category
            answer.sources = sources_of(hits)
            return answer, hits, 2
        return answer, [], 0

    def _part_in_scope(
        self, message: str, asked: list[str], alone: list[SearchResult], whole: SearchResult
    ) -> SearchResult | None:
        """For a `message` declined as a whole (`whole`), the best-scoring retrieval of one of
        its parts that answers for it, or None. The rest of a long complaint dilutes its topic
        under the gate. The parts, in turn: its questions (`asked`; `alone`, their retrievals
        when it asks several), then, when none answers, its sentences that hold none of them,
        so a statement is never preferred to a question; MAX_PARTS parts in all. A part
        answers when it is in scope alone and its top entry is on the topic the whole message
        ranked first (entry, or intent on a labelled KB), or when it stands alone
        (`_stands_alone`): a question at SECOND_QUESTION_SURE confidence, a statement at
        STATEMENT_SURE. The agreement keeps a filler part from answering on its own ("Sort it
        out!" found a spreadsheet-sorting entry on StackFAQ), and a question that leans on
        the rest ("can i report it") from answering for it. Answered so: "My 8 year old just
        watched a horror film... How do I restrict what her profile can play?" (its
        question); "Every single evening the show freezes and spins every few minutes. [...]
        What is going on with your streaming??" (the statement, the buffering entry at 0.99,
        where the question finds the data-usage entry at 0.50)."""
        if not whole.hits:
            return None
        topic = whole.hits[0].document.topic
        whole_text = " ".join(message.split())
        if asked and asked != [whole_text]:
            results = alone or [self.retriever.search(part, self.k) for part in asked]
            found = self._answering(asked, results, topic, SECOND_QUESTION_SURE)
            if found:
                return max(found, key=lambda r: r.scope_score)
        # A sentence that holds a question ("I was charged twice, how do I get my money
        # back?") was searched as that question; at most MAX_PARTS parts in all.
        held = [part for part in sentences(message) if not any(q in part for q in asked)]
        statements = held[: MAX_PARTS - len(asked)]
        if not statements or statements == [whole_text]:
            return None
        results = [self.retriever.search(part, self.k) for part in statements]
        found = self._answering(statements, results, topic, STATEMENT_SURE)
        return max(found, key=lambda r: r.scope_score) if found else None

    def _answering(
        self, parts: list[str], results: list[SearchResult], topic: str, sure: float
    ) -> list[SearchResult]:
        """The retrievals (`results`, one per part of `parts`) of the parts that answer for a
        declined message: in scope, on its `topic` or standing alone at `sure` confidence."""
        return [
            result
            for part, result in zip(parts, results, strict=True)
            if result.in_scope
            and result.hits
            and (result.hits[0].document.topic == topic or self._stands_alone(part, result, sure))
        ]

    def _stands_alone(self, part: str, result: SearchResult, sure: float) -> bool:
        """Whether a message's `part` (a question or a statement), found in scope alone
        (`result`), says something of its own: it leans on nothing said beside it (no pronoun
        for a topic, no "what about", `query.refers_back`), names something the KB speaks of
        (`Retriever.names_a_kb_word`) and finds its entry at `sure` confidence or more. "How
        do I get my money back??" after a long complaint (0.94) is one; "can i report it"
        after "there has been a fraud on my visa card", "What should I do?" after a
        neighbour's drums (0.996, the hacked-account entry) and "can you help me" (0.11)
        after "I'm not sure how to jump start a car" are not."""
        return (
            not refers_back(without_joiner(part))
            and self.retriever.names_a_kb_word(part)
            and result.confidence >= sure
        )

    def _two_topics(
        self, tops: Sequence[SearchResult], hits: Sequence[Hit], asked: Sequence[str] = ()
    ) -> tuple[Hit, Hit] | None:
        """The entries for two questions of the message ("How do I cancel? And will I lose my
        list?"), in the order they are asked, or None. `tops` are the retrievals of the
        message's questions alone, in order (none for a message of one question: a statement
        beside a question, "I was charged twice. Can I get a refund?", is not a question of
        its own, `query.questions`). The message's first hit is one entry; the other is the
        best entry of the first other question that is in scope alone at
        SECOND_QUESTION_SURE confidence, on another topic (entry, or intent on a labelled KB);
        in scope as a question beside an in-scope one (`Retriever.in_scope_beside`). A request
        worded as a statement after a question (`asked`, the questions' texts;
        `query.is_request`) must be found at STATEMENT_SURE, since it may say why rather than
        what: "How do I cancel my plan? I want to switch to another service." found the
        profiles entry at 0.79; one that leads ("I need to pause my plan while I'm away, and
        also how do I change my card?", 0.84) asks as a question does. A third
        question is not answered apart. A message of several questions that is declined as a
        whole may be answered from one of them (`_part_in_scope`): an off-topic question
        beside it ("How do I cancel? And what's the weather in Paris?") lowers the whole
        message's score."""
        if len(tops) < 2:
            return None
        first = hits[0].document.topic
        own = [result.hits[0].document.topic if result.hits else None for result in tops]
        for position, alone in enumerate(tops):
            # A request after a question of the message: not one that leads.
            request = (
                position < len(asked)
                and is_request(asked[position])
                and any(not is_request(part) for part in asked[:position])
            )
            if (
                self.retriever.in_scope_beside(alone)
                and alone.hits
                and alone.confidence >= (STATEMENT_SURE if request else SECOND_QUESTION_SURE)
                and own[position] != first
            ):
                # Asked before the question the first hit answers: it comes first.
                answers_first = _asked_for(first, tops)
                if answers_first is not None and position < answers_first:
                    return alone.hits[0], hits[0]
                return hits[0], alone.hits[0]
        return None

    def _translate(self, question: str, answer: Answer) -> str | None:
        """`question` in the KB's language, to retrieve with; None when it cannot be, as here,
        without an answer model (`rag.Assistant` translates)."""
        return None


def _asked_for(topic: str, tops: Sequence[SearchResult]) -> int | None:
    """The position of the question, among a message's questions searched alone (`tops`),
    that ranks `topic` highest among its hits (the earliest on a tie), or None when no hits
    hold it. The whole message's top entry need not be any question's own top (a second
    question alone may rank a neighbouring entry first), and its answer must still come in the
    order the question was asked."""
    ranks = [
        (rank, position)
        for position, result in enumerate(tops)
        for rank, hit in enumerate(result.hits)
        if hit.document.topic == topic
    ]
    return min(ranks)[1] if ranks else None
