"""The assistant: retrieve, decide, generate (or extract), fill placeholders, time it."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from assistant import knowledge, prompts
from assistant.config import Settings
from assistant.knowledge import Document, Profile
from assistant.llm import (
    CallRecord,
    Completion,
    ExtractiveProvider,
    IncompleteStream,
    Provider,
    ProviderError,
    make_provider,
)
from assistant.llm.echo import InstructionsEchoed, instructions_of
from assistant.privacy import contact_details
from assistant.replies import Replies, kb_topics
from assistant.retrieval import (
    EmbeddingCache,
    Hit,
    RetrievalSettings,
    Retriever,
    SearchResult,
    make_encoder,
    wordllama_encoder,
)
from assistant.retrieval.query import questions, refers_back, sentences
from assistant.signals import (
    FRUSTRATION,
    HandoffSignals,
    foreign_language,
    language_of,
    vocabulary,
)
from assistant.signals import read_examples as read_handoff_examples

log = logging.getLogger(__name__)

LANGUAGE_PREFIX = "I'm sorry, I can only answer in {language} for now. "
LANGUAGE_NAMES = {
    "ar": "Arabic", "de": "German", "en": "English", "es": "Spanish", "fr": "French",
    "it": "Italian", "ja": "Japanese", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese",
    "ru": "Russian", "tr": "Turkish", "zh": "Chinese",
}  # fmt: skip
UNSURE_PREFIX = "I want to be sure you get the right answer. "
SMALL_TALK_REPLIES = {
    "greeting": "Hello! I'm the {{COMPANY_NAME}} support assistant. What can I help you with?",
    "thanks": "You're welcome! Is there anything else I can help you with?",
    "goodbye": "Goodbye, and enjoy watching {{COMPANY_NAME}}!",
}
HUMAN_INTENT = "human_agent"
# The status of a streamed answer the customer left before it was complete.
ABANDONED = "abandoned"
# The status of a message that gave a contact after a forwarded handoff: passed on to the
# helpdesk, neither a support question nor another handoff (the outcome figures leave it out,
# as they do small talk).
CONTACT = "contact"

# A message is small talk only when these phrases make up all of it: "hi, how do I cancel?"
# is a question.
_SMALL_TALK = {
    "greeting": r"hi+|hello+|hey+|hiya|howdy|greetings|good (morning|afternoon|evening|day)"
    r"|how are you( doing)?|what'?s up",
    # Gratitude and its usual companions: "thanks, that worked!", "ok cool, got it". Said
    # after an answer, none of it is a question, and "that helped" must not read as the
    # frustration examples' "that didn't help".
    "thanks": r"(thanks?( you| u)?( so much| a lot| very much)?|thx|ty|cheers|much appreciated"
    r"|(i )?appreciate (it|that|your help))( for (the|your) (help|answer|assistance))?"
    r"|that('?s| is| was) (very |really )?(helpful|great|perfect)|(that|it|this) (really "
    r"|totally )?(helped|helps|worked|works( now)?|did it|did the trick|(fixed|solved|sorted)"
    r"( it| my problem| the problem| my issue| the issue)?)|(great|cool|perfect|awesome|nice"
    r"|brilliant|excellent|wonderful|amazing|lovely|sweet|good|helpful)( answer)?"
    r"|got it|all (good|set)"
    r"|sorted|you('re| are) (a star|the best)|merci( beaucoup)?|danke( schön| sehr)?"
    r"|gracias|grazie|obrigad[oa]",
    "goodbye": r"bye+|goodbye|good bye|see (you|ya)( later)?|that'?s all|have a (nice|good) day"
    r"|take care",
    None: r"and|ok(ay)?|so|well|there|team|folks|again|friend|assistant|bot",
}
_SMALL_TALK_PHRASES = [
    (kind, re.compile(rf"(?:{pattern})\b\s*")) for kind, pattern in _SMALL_TALK.items()
]


def small_talk_kind(question: str) -> str | None:
    """`greeting`, `thanks` or `goodbye` (the last one said) when the message is only that."""
    text = re.sub(r"\s+", " ", re.sub(r"[^\w\s']+", " ", question.lower())).strip()
    kind = None
    while text:
        for phrase_kind, phrase in _SMALL_TALK_PHRASES:
            match = phrase.match(text)
            if match:
                kind = phrase_kind or kind
                text = text[match.end() :]
                break
        else:
            return None
    return kind


@dataclass(frozen=True)
class Source:
    """A retrieved KB entry as the answer shows it: id, title, intent (or entry id), the
    retrieval score and the entry's URL (empty when the KB has none)."""

    id: str
    question: str
    intent: str
    score: float
    url: str = ""


@dataclass
class Answer:
    conversation_id: str
    session_id: str
    question: str
    answer: str
    model_used: str
    provider: str
    intent: str | None
    category: str | None
    confidence: float
    status: str
    sources: list[Source] = field(default_factory=list)
    response_time: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallback: bool = False
    error: str | None = None
    handoff_reason: str | None = None
    cost_usd: float = 0.0
    tokens_estimated: bool = False
    # The source ids the answer cites as [n]; `uncited`: a generated answer citing none of
    # the entries it was given.
    cited_sources: list[str] = field(default_factory=list)
    uncited: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def public(self) -> dict[str, object]:
        """The JSON body of `POST /question`."""
        body = asdict(self)
        private = (
            "prompt_tokens",
            "completion_tokens",
            "error",
            "cost_usd",
            "tokens_estimated",
            "cited_sources",
            "uncited",
        )
        for name in private:
            body.pop(name)
        body["response_time"] = round(self.response_time, 4)
        return body


@dataclass(frozen=True)
class Turn:
    """An earlier exchange of the session: the customer's message, the reply, and the
    reply's status (`answered`, `handoff`, `contact`, ...), which tells a session already
    handed off."""

    question: str
    answer: str
    status: str = "answered"


def handed_off(history: Sequence[Turn]) -> bool:
    """Whether the session was handed off in `history` (a handoff, or a contact passed on
    after one, so that a second contact follows the first)."""
    return any(turn.status in ("handoff", CONTACT) for turn in history)


# A follow-up this short ("and the yearly one?") may be retrieved together with the previous
# question (see Assistant._search).
FOLLOW_UP_WORDS = 6
# A follow-up this confident alone is its own question.
FOLLOW_UP_SURE = 0.5
# py3langid's probability of another language above which a message is not spell-corrected:
# "passwort vergessen" is German at 0.47; none of our 28 English typo questions reaches 0.4.
SPELLING_OTHER_LANGUAGE = 0.4
# A message's second question this confident alone is answered too (Assistant._two_topics):
# at 0.5, 2 of StackFAQ's 630 one-question queries were given a second entry, at 0.6 none;
# the second questions of two-question messages (our own set, newcomers' FAQs) scored 0.66-1.
SECOND_QUESTION_SURE = 0.6
# The most parts of a message (questions, or a declined one's sentences) searched alone: a
# 2,000-character rant has ~200 sentences.
MAX_PARTS = 8
HISTORY_TURNS = 3
_WORD = re.compile(r"\w+")
# "[1]", "[2, 3]", "[1][3]": the entries an answer cites, by their number in the prompt.
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def cited_ids(text: str, shown: Sequence[str]) -> list[str]:
    """The ids of the entries `text` cites as [n], in order of first citation; `shown` are the
    ids of the entries the prompt numbered 1, 2, ... (numbers outside them are ignored)."""
    cited: list[str] = []
    for group in _CITATION.findall(text):
        for number in re.findall(r"\d+", group):
            n = int(number)
            if 1 <= n <= len(shown) and shown[n - 1] not in cited:
                cited.append(shown[n - 1])
    return cited


@dataclass(frozen=True)
class Retraction:
    """In a stream: the text sent so far is withdrawn (the model failed after it started);
    the extractive answer follows in its place."""

    reason: str


def _placeholder_free(text: str, start: int) -> int:
    """How much of `text` may be sent, `text[:start]` being sent already: not from a
    "{{PLACEHOLDER}}" still open, which may arrive split across deltas."""
    held = text[start:]
    cut = held.rfind("{{")
    if cut < 0 and held.endswith("{"):
        cut = len(held) - 1
    return start + cut if cut >= 0 and "}}" not in held[cut:] else len(text)


def _normalized(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def build_messages(
    question: str, hits: list[Hit], company: str, history: Sequence[Turn] = ()
) -> list[dict[str, str]]:
    context = "\n".join(
        prompts.CONTEXT_ENTRY.format(
            number=n, question=hit.document.question, response=hit.document.response
        )
        for n, hit in enumerate(hits, start=1)
    )
    system = prompts.ANSWER_SYSTEM.format(company=company, canary=prompts.canary())
    messages = [{"role": "system", "content": system}]
    for turn in history[-HISTORY_TURNS:]:
        messages += [
            {"role": "user", "content": turn.question},
            {"role": "assistant", "content": turn.answer},
        ]
    messages.append(
        {"role": "user", "content": prompts.ANSWER_USER.format(context=context, question=question)}
    )
    return messages


class Assistant:
    """Answers one customer message: decides (small talk, handoff, out of scope or answer),
    then generates from the retrieved entries with the provider, falling back to the best
    entry verbatim when the provider fails.

    `signals` detects requests for a person and frustration on any KB (None: never).
    `handoffs_forwarded`: handed-off conversations are posted to the team's helpdesk
    (HANDOFF_WEBHOOK_URL), and the handoff reply promises a person's reply; a contact the
    customer gives after the handoff is passed on too (status `contact`). `phone_region`: the
    country whose national format a phone number without `+` is read in (PII_PHONE_REGION).
    """

    def __init__(
        self,
        retriever: Retriever,
        provider: Provider,
        profile: Profile,
        k: int = 5,
        knowledge_source: str = "custom",
        signals: HandoffSignals | None = None,
        handoffs_forwarded: bool = False,
        phone_region: str = "US",
    ):
        self.retriever = retriever
        self.handoffs_forwarded = handoffs_forwarded
        self.phone_region = phone_region
        self.handoff_threshold = retriever.settings.handoff_threshold
        self.knowledge_source = knowledge_source
        self.provider = provider
        self.profile = profile
        self.k = k
        self.signals = signals
        self._extractive = ExtractiveProvider()
        self.provider_calls = CallRecord()
        # A question in another language is translated for retrieval by an answer model that
        # can (a served one; the bundled 135M model cannot), else handed off for its language.
        self.translates = provider.name in ("openai", "ollama")
        docs = retriever.documents
        self.replies = Replies.for_profile(profile, kb_topics(docs), handoffs_forwarded)
        self.language = language_of(" ".join(d.question for d in docs[:300]))[0] if docs else "en"
        self._known_words = vocabulary([text for d in docs for text in d.phrasings])
        encoder = retriever.encoder
        self.multilingual = bool(encoder is not None and encoder.multilingual)

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
        joined = self.retriever.search(f"{history[-1].question} {question}", self.k)
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
        `searched` (the message as searched: spelling corrected, or translated) when given;
        a repeat is the message as asked, since history keeps messages as asked."""
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
        of the message: 2 when it asks two about different entries (see `_second_topic`)."""
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
        language = foreign_language(question, self.language, self._known_words)
        foreign = None if self.multilingual else language
        searched = question if language else self._spelled(question)
        if foreign and self.translates:
            translation = self._translate(question, answer)
            if translation:
                searched, foreign = translation, None
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
            prefix = ""
            if foreign:
                language = LANGUAGE_NAMES.get(self.language, self.language)
                prefix = LANGUAGE_PREFIX.format(language=language)
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
        answer.sources = _sources(result.hits)
        if not result.in_scope or not result.hits:
            answer.status, answer.answer = "out_of_scope", self.replies.out_of_scope
            answer.sources = []
        elif result.intent == HUMAN_INTENT:
            answer.status, answer.handoff_reason = "handoff", "requested_human"
            answer.answer = self.replies.handoff
        elif result.confidence < self.handoff_threshold:
            answer.status, answer.handoff_reason = "handoff", "low_confidence"
            answer.answer = UNSURE_PREFIX + self.replies.handoff
        else:
            pair = self._two_topics(alone, result.hits)
            if pair is None:
                return answer, result.hits, 1
            ids = {hit.document.id for hit in pair}
            rest = [hit for hit in result.hits if hit.document.id not in ids]
            hits = [*pair, *rest][: max(len(result.hits), 2)]
            answer.intent, answer.category = pair[0].document.topic, pair[0].document.category
            answer.sources = _sources(hits)
            return answer, hits, 2
        return answer, [], 0

    def _part_in_scope(
        self, message: str, asked: list[str], alone: list[SearchResult], whole: SearchResult
    ) -> SearchResult | None:
        """For a `message` declined as a whole (`whole`), the best-scoring retrieval of a part
        that is in scope alone and whose top entry is on the topic the whole message ranked
        first (entry, or intent on a labelled KB), or None. The rest of a long complaint
        dilutes its topic under the gate; the agreement keeps a filler part from answering on
        its own ("Sort it out!" found a spreadsheet-sorting entry on StackFAQ). The parts: its
        questions, when it asks several (`alone`, the retrievals of `asked`), or one beside
        statements ("My 8 year old just watched a horror film... How do I restrict what her
        profile can play?"); else its first MAX_PARTS sentences ("The subtitles are two
        seconds behind. This has been going on for weeks, fix it!"). A statement is never
        preferred to a question."""
        if not whole.hits:
            return None
        if len(asked) > 1:
            found = alone
        else:
            parts = (asked or sentences(message))[:MAX_PARTS]
            if not parts or parts == [" ".join(message.split())]:
                return None
            found = [self.retriever.search(part, self.k) for part in parts]
        topic = whole.hits[0].document.topic
        found = [r for r in found if r.in_scope and r.hits and r.hits[0].document.topic == topic]
        return max(found, key=lambda r: r.scope_score) if found else None

    def _two_topics(
        self, tops: Sequence[SearchResult], hits: Sequence[Hit]
    ) -> tuple[Hit, Hit] | None:
        """The entries for two questions of the message ("How do I cancel? And will I lose my
        list?"), in the order they are asked, or None. `tops` are the retrievals of the
        message's questions alone, in order (none for a message of one question: a statement
        beside a question, "I was charged twice. Can I get a refund?", is not a question of
        its own, `query.questions`). The message's first hit is one entry; the other is the
        best entry of the first other question that is in scope alone at
        SECOND_QUESTION_SURE confidence, on another topic (entry, or intent on a labelled KB);
        in scope as a question beside an in-scope one (`Retriever.in_scope_beside`). A third
        question is not answered apart. A message of several questions that is declined as a
        whole may be answered from one of them (`_part_in_scope`): an off-topic question
        beside it ("How do I cancel? And what's the weather in Paris?") lowers the whole
        message's score."""
        if len(tops) < 2:
            return None
        first = hits[0].document.topic
        own = [result.hits[0].document.topic if result.hits else None for result in tops]
        for position, alone in enumerate(tops):
            if (
                self.retriever.in_scope_beside(alone)
                and alone.hits
                and alone.confidence >= SECOND_QUESTION_SURE
                and own[position] != first
            ):
                # Asked before the question the first hit answers: it comes first.
                if first in own and position < own.index(first):
                    return alone.hits[0], hits[0]
                return hits[0], alone.hits[0]
        return None

    def _translate(self, question: str, answer: Answer) -> str | None:
        """`question` in the KB's language by the answer model, to retrieve with (the model
        then answers the original, in its language); None when the model fails or replies
        with something that is not a plausible translation. Its tokens count to `answer`."""
        language = LANGUAGE_NAMES.get(self.language, self.language)
        messages = [
            {"role": "system", "content": prompts.TRANSLATE_SYSTEM.format(language=language)},
            {"role": "user", "content": question},
        ]
        try:
            completion = self.provider.complete(messages)
        except ProviderError as exc:
            log.warning("translating a question failed (%s): handed off for its language", exc)
            self._called(ok=False)
            return None
        self._called(ok=True)
        self._count(answer, completion)
        text = completion.text.strip().strip('"')
        if not text or len(text) > 4 * len(question) + 40:
            return None
        return text

    def answer(
        self, question: str, session_id: str | None = None, history: Sequence[Turn] = ()
    ) -> Answer:
        started = time.perf_counter()
        answer, hits, topics = self.decide(question, session_id, history)
        if hits:
            messages, references, shown = self._prompt(question, hits, history, topics)
            try:
                completion = self.provider.complete(messages, references=references)
                if completion.truncated:
                    self._count(answer, completion)  # spent, though not given
                    raise IncompleteStream("the answer was cut at the model's token limit")
                if instructions_of(messages).echoed(completion.text):
                    raise InstructionsEchoed("the answer repeats the instructions")
                answer.provider = self.provider.name
                self._called(ok=True)
            except ProviderError as exc:
                self._note_fallback(answer, exc)
                completion = self._extractive.complete(messages, references=references)
            self._take(answer, completion, shown, topics)
        return self._finish(answer, started)

    def stream(
        self,
        question: str,
        session_id: str | None = None,
        history: Sequence[Turn] = (),
        abandoned: Callable[[Answer], None] | None = None,
    ) -> Iterator[str | Retraction | Answer]:
        """Text deltas as the provider writes them, then the finished Answer. A provider that
        fails, stops before it says it finished, or starts repeating its instructions, is
        replaced by the extractive answer: when text was already sent, a `Retraction` comes
        first. No run of the instructions is ever sent, and no fragment is ever the answer.

        Closed before its end (the customer left), the stream stops the provider's request at
        once and, when the model was already asked, hands `abandoned` an Answer with status
        `abandoned`, no text and error `ClientDisconnected`."""
        started = time.perf_counter()
        answer, hits, topics = self.decide(question, session_id, history)
        if not hits:
            # A decided reply (a handoff, a decline, small talk) is text too: a client that
            # shows deltas shows it.
            self._finish(answer, started)
            yield answer.answer
            yield answer
            return
        messages, references, shown = self._prompt(question, hits, history, topics)
        guard = instructions_of(messages).guard()
        answer.provider = self.provider.name
        parts = self.provider.stream(messages, references=references)
        completion, sent = None, 0
        try:
            try:
                for part in parts:
                    if isinstance(part, Completion):
                        if part.truncated:
                            self._count(answer, part)  # spent, though not given
                            raise IncompleteStream("the answer was cut at the model's token limit")
                        completion = part
                        continue
                    if guard.add(part):
                        raise InstructionsEchoed("the answer repeats the instructions")
                    ready = _placeholder_free(guard.text[: guard.releasable()], sent)
                    if ready > sent:
                        yield self.profile.fill(guard.text[sent:ready])
                        sent = ready
                if completion is None:
                    raise IncompleteStream("the stream ended without a completion")
                if sent < len(guard.text):
                    yield self.profile.fill(guard.text[sent:])
                self._called(ok=True)
            except ProviderError as exc:
                parts.close()
                self._note_fallback(answer, exc)
                if sent:
                    yield Retraction(answer.error or "ProviderError")
                completion = self._extractive.complete(messages, references=references)
                # The knowledge base's own text: its {{PLACEHOLDERS}} are filled like a delta's.
                yield self.profile.fill(completion.text)
        except GeneratorExit:
            # Wherever the customer left, the fallback's deltas included.
            parts.close()
            answer.status, answer.error, answer.answer = ABANDONED, "ClientDisconnected", ""
            if abandoned is not None:
                abandoned(self._finish(answer, started))
            raise
        finally:
            parts.close()
        self._take(answer, completion, shown, topics)
        yield self._finish(answer, started)

    def _called(self, ok: bool) -> None:
        self.provider_calls.add(ok)

    @property
    def provider_status(self) -> str:
        """The answer provider's health from its recent calls: `ok`, `degraded` (the latest
        failed, or most of the last ten) or `unused`; always `ok` without a model."""
        if self.provider.name == ExtractiveProvider.name:
            return "ok"
        return self.provider_calls.status

    def _prompt(
        self, question: str, hits: list[Hit], history: Sequence[Turn], topics: int = 1
    ) -> tuple[list[dict[str, str]], list[str], list[str]]:
        """The messages, the answers for the extractive fallback (the first `topics` hits'
        answers together, then each other hit's) and the ids of the entries the prompt numbers
        [1], [2], ..."""
        # Small local models answer faster and no worse from the best entry alone (one per
        # question asked).
        entries = max(self.provider.context_entries or len(hits), topics)
        messages = build_messages(question, hits[:entries], self.profile.company_name, history)
        shown = [hit.document.id for hit in hits[:entries]]
        answers = [hit.document.response for hit in hits]
        return messages, ["\n\n".join(answers[:topics]), *answers[topics:]], shown

    def _note_fallback(self, answer: Answer, exc: ProviderError) -> None:
        log.warning("provider %s failed (%s); answering extractively", self.provider.name, exc)
        if not isinstance(exc, InstructionsEchoed):
            self._called(ok=False)
        answer.fallback = True
        answer.error = type(exc.__cause__ or exc).__name__
        answer.provider = self._extractive.name

    def _take(
        self, answer: Answer, completion: Completion, shown: Sequence[str], topics: int = 1
    ) -> None:
        if answer.provider == self._extractive.name:
            # The best entry itself (one per question asked), verbatim: its own source.
            answer.cited_sources, answer.uncited = list(shown[:topics]), False
        else:
            answer.cited_sources = cited_ids(completion.text, shown)
            answer.uncited = bool(shown) and not answer.cited_sources
        answer.answer = completion.text
        answer.model_used = completion.model
        self._count(answer, completion)

    @staticmethod
    def _count(answer: Answer, completion: Completion) -> None:
        """Add a completion's tokens and cost to the answer's (a translation's, then the
        answer's own)."""
        answer.prompt_tokens += completion.prompt_tokens
        answer.completion_tokens += completion.completion_tokens
        answer.cost_usd += completion.cost_usd
        answer.tokens_estimated = answer.tokens_estimated or completion.tokens_estimated

    def _finish(self, answer: Answer, started: float) -> Answer:
        # Filled after generation too: a model may echo a {{PLACEHOLDER}} from its context.
        answer.answer = self.profile.fill(answer.answer)
        answer.response_time = time.perf_counter() - started
        return answer


# Bump when the Retriever's pickled state changes shape: older index files are then rebuilt.
INDEX_FORMAT = 8


def _index_path(settings: Settings, documents: Sequence[Document], parts: Sequence[str]) -> Path:
    hasher = hashlib.sha256()
    for doc in documents:
        hasher.update(json.dumps(doc.to_dict(), sort_keys=True).encode())
    for part in (str(INDEX_FORMAT), *parts):
        hasher.update(part.encode())
    return settings.cache_dir / f"index-{hasher.hexdigest()[:16]}.pkl"


def build_retriever(
    settings: Settings, documents: Sequence[Document], *, lexical: bool = False
) -> Retriever:
    """The configured retriever over `documents`; `lexical` is plain minsearch (no intent
    model, no embeddings). A built index is kept in the cache folder under a hash of the KB's
    content, the settings, the encoder and the background, so a restart loads it (about a
    second for 25,000 entries) instead of building it again."""
    tuned = RetrievalSettings.load(settings.retrieval_settings)
    if lexical:
        tuned = replace(tuned, use_intent_model=False, hybrid=False)
    encoder = None if lexical else make_encoder(settings)
    background = knowledge.read_lines(settings.out_of_domain)
    parts = [json.dumps(asdict(tuned), sort_keys=True, default=str), *background]
    # The encoder's own gate position is part of the index: a changed one rebuilds it.
    own = [encoder.name, str(encoder.scope_position)] if encoder else ["none"]
    path = _index_path(settings, documents, [*own, *parts])
    if path.is_file():
        try:
            return Retriever.load(path, encoder)
        except (OSError, EOFError, TypeError, AttributeError, pickle.UnpicklingError) as exc:
            log.warning("index cache %s unreadable (%s); rebuilding", path.name, exc)
    embeddings = EmbeddingCache(encoder, settings.cache_dir) if encoder else None
    retriever = Retriever(documents, tuned, background, encoder, embeddings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        retriever.save(path)
    except OSError as exc:
        log.warning("could not keep the index in %s (%s)", path.parent, exc)
    return retriever


def build_signals(settings: Settings, retriever: Retriever) -> HandoffSignals:
    """Handoff signals learnt from `data/handoff-examples.txt` against this KB's questions."""
    return HandoffSignals(
        read_handoff_examples(settings.handoff_examples),
        # Not the alternates: a team's contact entry may keep "I want to speak to an agent"
        # as one, and a request for a person must never look like a KB question.
        [doc.question for doc in retriever.documents],
        knowledge.read_lines(settings.out_of_domain),
        # Whatever the retrieval encoder, so the signal is the same on every install; not
        # where the operator asked for no embeddings at all.
        encoder=None if settings.embedding_provider == "none" else wordllama_encoder(),
    )


def _sources(hits: Sequence[Hit]) -> list[Source]:
    """The API's `sources` for `hits`, in their order."""
    return [
        Source(
            h.document.id, h.document.question, h.document.topic, round(h.score, 4),
            h.document.url,
        )
        for h in hits
    ]  # fmt: skip


def _own_kb(settings: Settings, source: str | None) -> bool:
    """Whether `source` (default: KB_PATH) is a team's own KB: not the demo KB, in any
    spelling, nor the Bitext dataset the demo profile was written for."""
    source = source or settings.kb_source
    if source in {"auto", "demo", settings.kb_url}:
        return False
    return Path(source).resolve() != settings.demo_kb.resolve()


def _demo_company(settings: Settings) -> str:
    """The company the bundled business profile speaks for."""
    return knowledge.load_profile(settings.demo_kb.parent / "business-profile.yaml").company_name


def build_assistant(settings: Settings, source: str | None = None) -> Assistant:
    """The assistant the settings describe, over the KB `source` (default: the configured one)."""
    kb = knowledge.load_configured(settings, source)
    log.info("knowledge base: %d documents from %s", len(kb), kb.source)
    retriever = build_retriever(settings, kb.documents)
    profile = knowledge.load_profile(settings.profile_path)
    if _own_kb(settings, source) and profile.company_name == _demo_company(settings):
        # Else a team's customers are told to call the fictional demo company.
        log.warning(
            "KB_PATH is your own knowledge base, but BUSINESS_PROFILE is the demo's: declines "
            "and handoffs speak for %s and give its contact details. Copy "
            "data/business-profile.yaml, fill in your own and set BUSINESS_PROFILE to it",
            profile.company_name,
        )
    return Assistant(
        retriever,
        make_provider(settings),
        profile,
        k=settings.num_results,
        knowledge_source=kb.source,
        signals=build_signals(settings, retriever),
        handoffs_forwarded=bool(settings.handoff_webhook_url),
        phone_region=settings.pii_phone_region,
    )
