"""The assistant: retrieve, decide, generate (or extract), fill placeholders, time it."""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass, field

from assistant import prompts
from assistant.knowledge import Profile
from assistant.llm import Completion, ExtractiveProvider, Provider, ProviderError
from assistant.search import Hit, Retriever

log = logging.getLogger(__name__)

OUT_OF_SCOPE_REPLY = (
    "I'm sorry, I can't help with that: I'm {{COMPANY_NAME}}'s support assistant. I can help "
    "with your subscription and plans, payments and billing, your account and password, "
    "languages and subtitles, parental controls, devices, the program schedule and new "
    "releases, and reporting content. For anything else, our team is at "
    "{{CUSTOMER_SUPPORT_EMAIL}} or {{CUSTOMER_SUPPORT_PHONE}}."
)
HANDOFF_REPLY = (
    "Let me connect you with a person from our support team. You can reach them by live chat "
    "at {{LIVE_CHAT_URL}}, by email at {{CUSTOMER_SUPPORT_EMAIL}} or by phone at "
    "{{CUSTOMER_SUPPORT_PHONE}} ({{CUSTOMER_SUPPORT_HOURS}})."
)
UNSURE_PREFIX = "I want to be sure you get the right answer. "
SMALL_TALK_REPLIES = {
    "greeting": "Hello! I'm {{COMPANY_NAME}}'s support assistant. What can I help you with?",
    "thanks": "You're welcome! Is there anything else I can help you with?",
    "goodbye": "Goodbye, and enjoy watching {{COMPANY_NAME}}!",
}
HUMAN_INTENT = "human_agent"

# A message is small talk only when these phrases make up all of it: "hi, how do I cancel?"
# is a question.
_SMALL_TALK = {
    "greeting": r"hi+|hello+|hey+|hiya|howdy|greetings|good (morning|afternoon|evening|day)"
    r"|how are you( doing)?|what'?s up",
    "thanks": r"thanks?( you)?( so much| a lot| very much)?|thx|ty|cheers|much appreciated"
    r"|(i )?appreciate (it|that|your help)|that('?s| is| was) (very )?(helpful|great|perfect)",
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
    id: str
    question: str
    intent: str
    score: float


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

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def public(self) -> dict[str, object]:
        """The JSON body of `POST /question`."""
        body = asdict(self)
        for private in ("prompt_tokens", "completion_tokens", "error", "handoff_reason"):
            body.pop(private)
        body["response_time"] = round(self.response_time, 4)
        return body


def build_messages(question: str, hits: list[Hit], company: str) -> list[dict[str, str]]:
    context = "\n".join(
        prompts.CONTEXT_ENTRY.format(
            number=n, question=hit.document.question, response=hit.document.response
        )
        for n, hit in enumerate(hits, start=1)
    )
    return [
        {"role": "system", "content": prompts.ANSWER_SYSTEM.format(company=company)},
        {"role": "user", "content": prompts.ANSWER_USER.format(context=context, question=question)},
    ]


class Assistant:
    def __init__(
        self,
        retriever: Retriever,
        provider: Provider,
        profile: Profile,
        k: int = 5,
        knowledge_source: str = "custom",
    ):
        self.retriever = retriever
        self.handoff_threshold = retriever.settings.handoff_threshold
        self.knowledge_source = knowledge_source
        self.provider = provider
        self.profile = profile
        self.k = k
        self._extractive = ExtractiveProvider()

    def answer(self, question: str, session_id: str | None = None) -> Answer:
        started = time.perf_counter()
        chat = small_talk_kind(question)
        result = self.retriever.search(question, self.k)
        answer = Answer(
            conversation_id=uuid.uuid4().hex,
            session_id=session_id or uuid.uuid4().hex,
            question=question,
            answer="",
            model_used="none",
            provider="none",
            intent=result.intent,
            category=result.category,
            confidence=result.confidence,
            status="answered",
            sources=[
                Source(h.document.id, h.document.question, h.document.intent, round(h.score, 4))
                for h in result.hits
            ],
        )
        if chat:
            answer.status, answer.answer = "small_talk", SMALL_TALK_REPLIES[chat]
            answer.intent = answer.category = None
            answer.sources = []
        elif not result.in_scope or not result.hits:
            answer.status, answer.answer = "out_of_scope", OUT_OF_SCOPE_REPLY
            answer.sources = []
        elif result.intent == HUMAN_INTENT:
            answer.status, answer.handoff_reason = "handoff", "requested_human"
            answer.answer = HANDOFF_REPLY
        elif result.confidence < self.handoff_threshold:
            answer.status, answer.handoff_reason = "handoff", "low_confidence"
            answer.answer = UNSURE_PREFIX + HANDOFF_REPLY
        else:
            completion = self._generate(question, result.hits, answer)
            answer.answer = completion.text
            answer.model_used = completion.model
            answer.prompt_tokens = completion.prompt_tokens
            answer.completion_tokens = completion.completion_tokens
        # Filled after generation too: a model may echo a {{PLACEHOLDER}} from its context.
        answer.answer = self.profile.fill(answer.answer)
        answer.response_time = time.perf_counter() - started
        return answer

    def _generate(self, question: str, hits: list[Hit], answer: Answer) -> Completion:
        references = [hit.document.response for hit in hits]
        messages = build_messages(question, hits, self.profile.company_name)
        try:
            completion = self.provider.complete(messages, references=references)
            answer.provider = self.provider.name
            return completion
        except ProviderError as exc:
            log.warning("provider %s failed (%s); answering extractively", self.provider.name, exc)
            answer.fallback = True
            answer.error = type(exc.__cause__ or exc).__name__
            answer.provider = self._extractive.name
            return self._extractive.complete(messages, references=references)
