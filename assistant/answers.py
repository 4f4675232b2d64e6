"""What the assistant returns for one message, and the session's earlier turns it reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from assistant.retrieval import Hit

# The status of a streamed answer the customer left before it was complete.
ABANDONED = "abandoned"
# The status of a message that gave a contact after a forwarded handoff: passed on to the
# helpdesk, neither a support question nor another handoff (the outcome figures leave it out,
# as they do small talk).
CONTACT = "contact"


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


def sources_of(hits: Sequence[Hit]) -> list[Source]:
    """The API's `sources` for `hits`, in their order."""
    return [
        Source(
            h.document.id, h.document.question, h.document.topic, round(h.score, 4),
            h.document.url,
        )
        for h in hits
    ]  # fmt: skip
