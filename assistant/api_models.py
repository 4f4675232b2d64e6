"""The HTTP API's request and response models: they validate input and generate /openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from assistant.config import MAX_QUESTION_CHARS

# `contact`: a contact given after a handoff, passed on to the helpdesk with it.
Status = Literal["answered", "out_of_scope", "handoff", "small_talk", "contact"]
# A stored conversation may also be a stream the customer left before it was complete.
StoredStatus = Literal["answered", "out_of_scope", "handoff", "small_talk", "contact", "abandoned"]
# The keys of handoff.REASONS: why decisions.Decisions handed a conversation to a person.
HandoffReason = Literal["requested_human", "frustration", "low_confidence", "language"]
Relevance = Literal["RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT", "PENDING", "UNJUDGED"]


class QuestionRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    question: str = Field(
        max_length=MAX_QUESTION_CHARS,
        description="The customer's question in plain words; a longer one is refused with 413.",
        examples=["How do I cancel my subscription?"],
        # Documents the blank check `app.read_question` makes after stripping.
        json_schema_extra={"pattern": r"\S"},
    )
    session_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Keeps a conversation together: short follow-ups use the previous turns.",
    )


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    conversation_id: str = Field(min_length=1, max_length=128)
    # StrictInt and the validator, not Literal[1, -1], which would let true and 1.0 through.
    feedback: StrictInt = Field(
        description="1 for thumbs up, -1 for thumbs down.", json_schema_extra={"enum": [1, -1]}
    )
    comment: str | None = Field(default=None, max_length=2000)

    @field_validator("feedback")
    @classmethod
    def _thumb(cls, value: int) -> int:
        if value not in (1, -1):
            raise ValueError("must be 1 (thumbs up) or -1 (thumbs down)")
        return value


class StatsQuery(BaseModel):
    since: datetime | None = Field(
        default=None,
        description="ISO-8601 start of the window (UTC when no zone is given); default 24 h ago.",
    )

    @field_validator("since", mode="before")
    @classmethod
    def _iso(cls, value: object) -> object:
        # Pydantic alone would also read "0.85" as seconds since 1970: only ISO-8601 is meant.
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                pass
        raise ValueError("expected ISO-8601, e.g. 2025-01-31T09:00:00Z")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Source(BaseModel):
    id: str
    question: str
    intent: str = Field(description="The entry's intent, or its id in a KB without intents")
    score: float
    url: str = Field("", description="Where the customer can read the entry; empty if unknown")


class AnswerResponse(BaseModel):
    conversation_id: str
    session_id: str
    question: str
    answer: str
    model_used: str = Field(description="The model that wrote the answer, or 'extractive'.")
    provider: str
    intent: str | None = Field(
        description="The top entry's intent (its id in a KB without intents). For a declined "
        "question it is the nearest one, which the question was not close enough to: the team "
        "sees what a KB gap sits beside. None where no retrieval ran (small talk, a request for a "
        "person or frustration, another language, a contact given after a handoff)."
    )
    category: str | None
    confidence: float = Field(
        description="How sure retrieval was of the top entry over the others, 0-1."
    )
    status: Status
    handoff_reason: HandoffReason | None = Field(
        description="Why a handoff went to a person: requested_human (asked for one), "
        "frustration, low_confidence (retrieval was unsure), language (another language). "
        "None unless status is handoff."
    )
    sources: list[Source]
    response_time: float = Field(description="Seconds the service took to answer.")
    fallback: bool = Field(description="True when the extractive fallback answered.")


class FeedbackResponse(BaseModel):
    conversation_id: str
    feedback: int
    status: Literal["saved", "queued"] = Field(
        description="'queued' while the database is away: the vote is kept and stored later."
    )


class ConversationResponse(BaseModel):
    """What a client may see of a stored conversation: no errors, tokens or costs."""

    id: str
    timestamp: datetime
    session_id: str | None
    question: str
    answer: str
    model_used: str
    intent: str | None
    category: str | None
    confidence: float | None
    status: StoredStatus
    fallback: bool
    sources: list[Source]
    response_time: float
    relevance: Relevance
    feedback: int | None
    feedback_comment: str | None


class KnowledgeBaseInfo(BaseModel):
    documents: int
    source: str


class ProbeResponse(BaseModel):
    status: Literal["alive", "ready", "not_ready"]


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "down"]
    spool: int = Field(description="Rows waiting in the local spool for the database.")
    spool_status: Literal["ok", "failing"] = Field(
        description="`failing` while the spool cannot write: with the database down too, "
        "answers cannot be stored."
    )
    jobs: int | None = Field(
        description="Background jobs (judgements) waiting; null while the database is down."
    )
    provider: str
    provider_status: Literal["ok", "degraded", "unused"] = Field(
        description="The answer model's recent calls: `degraded` while the latest failed, "
        "or most of the last ten."
    )
    model: str
    knowledge_base: KnowledgeBaseInfo


class ResponseTimes(BaseModel):
    p50: float | None
    p95: float | None
    mean: float | None


class Tokens(BaseModel):
    prompt: int
    completion: int
    judge: int
    total: int


class RelevanceCounts(BaseModel):
    RELEVANT: int
    PARTLY_RELEVANT: int
    NON_RELEVANT: int
    PENDING: int
    UNJUDGED: int = Field(description="The judge replied, but its verdict could not be read.")


class FeedbackCounts(BaseModel):
    thumbs_up: int
    thumbs_down: int
    satisfaction: float | None


class HourlyFigures(BaseModel):
    hour: datetime
    conversations: int
    p50: float | None
    p95: float | None
    cost_usd: float | None


class StatusCount(BaseModel):
    status: str
    conversations: int


class ModelCost(BaseModel):
    model: str
    conversations: int
    cost_usd: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    judge_tokens: int | None


class IntentCount(BaseModel):
    intent: str
    conversations: int
    thumbs_down: int


class KnowledgeGap(BaseModel):
    question: str
    times: int
    declined: int
    low_confidence: int
    voted_down: int
    last_asked: datetime


class StatsResponse(BaseModel):
    since: datetime
    conversations: int
    response_time: ResponseTimes
    resolution_rate: float | None = Field(
        description="Of the conversations that are neither small talk nor a contact given "
        "after a handoff: the share answered, not voted down, and not followed by another "
        "question of the session within 10 minutes."
    )
    handoff_rate: float | None = Field(
        description="Of the conversations that are neither small talk nor a contact given "
        "after a handoff: the share handed off."
    )
    handoff_rate_by_reason: dict[str, float] = Field(
        description="The handoff rate of each reason (requested_human, frustration, "
        "low_confidence, language)."
    )
    csat: float | None = Field(description="The share of thumbs up among the votes given.")
    cost_usd: float
    tokens: Tokens
    relevance: RelevanceCounts
    feedback: FeedbackCounts
    hourly: list[HourlyFigures]
    status_mix: list[StatusCount]
    cost_by_model: list[ModelCost]
    top_intents: list[IntentCount]
    knowledge_gaps: list[KnowledgeGap] = Field(
        description="The questions the knowledge base failed most often (declined, handed off "
        "for low confidence, voted down), identical wordings counted together; "
        "`assistant gaps` groups paraphrases too."
    )
