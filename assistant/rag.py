"""The assistant: retrieve, decide, generate (or extract), fill placeholders, time it."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field

from assistant import prompts
from assistant.knowledge import Profile
from assistant.llm import Completion, ExtractiveProvider, Provider, ProviderError
from assistant.search import Hit, Retriever

log = logging.getLogger(__name__)

NO_MATCH = (
    "I'm sorry, I can't help with that from our support knowledge base. "
    "You can reach a person at {{CUSTOMER_SUPPORT_EMAIL}} or {{CUSTOMER_SUPPORT_PHONE}}."
)


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
        self.knowledge_source = knowledge_source
        self.provider = provider
        self.profile = profile
        self.k = k
        self._extractive = ExtractiveProvider()

    def answer(self, question: str, session_id: str | None = None) -> Answer:
        started = time.perf_counter()
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
        if result.hits:
            completion = self._generate(question, result.hits, answer)
            answer.answer = completion.text
            answer.model_used = completion.model
            answer.prompt_tokens = completion.prompt_tokens
            answer.completion_tokens = completion.completion_tokens
        else:
            answer.status = "out_of_scope"
            answer.answer = NO_MATCH
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
