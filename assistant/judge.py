"""LLM-as-judge relevance, off the request path.

The app saves a conversation with relevance PENDING and, in the same transaction, a `judge`
job that a `jobs.JobRunner` runs later, so judging never delays or fails a customer's answer.
The verdict (RELEVANT, PARTLY_RELEVANT or NON_RELEVANT), its explanation, the judge's tokens
and its cost are written when they are known. Rows older than the jobs table, or whose job
failed for good, are finished by `judge_pending`, which `assistant judge --pending` runs.

With no judge model, a heuristic from the retrieval confidence and the answer's status gives
the verdict, and says so: relevance_source is `heuristic`, not `llm`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assistant import prompts
from assistant.llm import Provider, ProviderError, make_judge_provider

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.db import Database

log = logging.getLogger(__name__)

LABELS = ("RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT")
# Stored when the judge model replied but its verdict could not be read: never a guess.
UNJUDGED = "UNJUDGED"
# The judge's reply, as a JSON schema: asked for through the provider's structured output
# where it has one (OpenAI's `response_format`, Ollama's `format`), and in the prompt always.
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "relevance": {"type": "string", "enum": list(LABELS)},
        "explanation": {"type": "string"},
    },
    "required": ["relevance", "explanation"],
    "additionalProperties": False,
}
_FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL | re.IGNORECASE)


class UnreadableVerdict(ValueError):
    """The judge's reply is not one JSON object with a known `relevance` label."""


HEURISTIC = "heuristic"
# Retrieval confidence (the share of the hits' score that agrees with the top intent) above
# which an answered question counts as RELEVANT, and above which PARTLY_RELEVANT.
RELEVANT_CONFIDENCE = 0.6
PARTLY_CONFIDENCE = 0.3


@dataclass(frozen=True)
class Verdict:
    relevance: str
    explanation: str
    source: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    tokens_estimated: bool = False


def heuristic_verdict(status: str, confidence: float | None, reason: str) -> Verdict:
    """A verdict without a model: from what the assistant decided and how sure retrieval was."""
    confidence = confidence or 0.0
    if status == "answered":
        if confidence >= RELEVANT_CONFIDENCE:
            relevance = "RELEVANT"
        elif confidence >= PARTLY_CONFIDENCE:
            relevance = "PARTLY_RELEVANT"
        else:
            relevance = "NON_RELEVANT"
        why = f"answered from the knowledge base with retrieval confidence {confidence:.2f}"
    elif status in ("handoff", "small_talk", "contact"):
        relevance = "PARTLY_RELEVANT"
        why = f"status {status}: the reply is on topic but answers no support question"
    else:
        relevance = "NON_RELEVANT"
        why = f"status {status}: no knowledge-base answer was given"
    return Verdict(relevance, f"heuristic ({reason}): {why}", HEURISTIC, HEURISTIC)


def sources_text(sources: Iterable[Any]) -> str:
    """The retrieved entries as the judge sees them, from `answers.Source`s or stored dicts."""
    lines = []
    for number, source in enumerate(sources, start=1):
        get = source.get if isinstance(source, Mapping) else lambda key, s=source: getattr(s, key)
        lines.append(f"[{number}] {get('question')} (intent: {get('intent')})")
    return "\n".join(lines) or "(none)"


def parse_verdict(text: str) -> tuple[str, str]:
    """(label, explanation) from a judge reply that is exactly one JSON object (in a code
    fence or not) whose `relevance` field holds a label; keys and the label's case, spaces and
    hyphens are forgiven. Raises UnreadableVerdict for anything else: prose, two objects, a
    label named only in passing. A reply that weighs one label before concluding another
    must not be read as the first one it names."""
    body = text.strip()
    fenced = _FENCED.fullmatch(body)
    if fenced:
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise UnreadableVerdict(f"not one JSON object ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict):
        raise UnreadableVerdict(f"a JSON {type(data).__name__}, not an object")
    fields = {str(key).lower(): value for key, value in data.items()}
    value = fields.get("relevance")
    if not isinstance(value, str):
        raise UnreadableVerdict("no relevance field")
    label = re.sub(r"[\s-]+", "_", value.strip().upper())
    if label not in LABELS:
        raise UnreadableVerdict(f"relevance {value[:40]!r} is not one of {', '.join(LABELS)}")
    explanation = fields.get("explanation")
    return label, (explanation.strip() if isinstance(explanation, str) else "")


class Judge:
    """Judges one exchange with the judge model, or the heuristic when there is none."""

    def __init__(self, provider: Provider | None):
        self.provider = provider

    @property
    def model(self) -> str:
        return self.provider.model if self.provider else HEURISTIC

    def evaluate(
        self, question: str, answer: str, sources: str, status: str, confidence: float | None
    ) -> Verdict:
        """Raises ProviderError when the judge model fails: the row should stay PENDING."""
        if self.provider is None:
            return heuristic_verdict(status, confidence, "no judge model configured")
        messages = [
            {"role": "system", "content": prompts.JUDGE_SYSTEM},
            {
                "role": "user",
                "content": prompts.JUDGE_USER.format(
                    question=question, sources=sources, answer=answer
                ),
            },
        ]
        ask_json = getattr(self.provider, "complete_json", None)
        if ask_json is not None:
            completion = ask_json(messages, VERDICT_SCHEMA)
        else:
            completion = self.provider.complete(messages)
        try:
            relevance, explanation = parse_verdict(completion.text)
        except UnreadableVerdict as exc:
            log.warning("judge %s replied without a readable verdict: %s", completion.model, exc)
            relevance, explanation = UNJUDGED, f"the judge's reply could not be read: {exc}"
        source = "llm"
        # The judge's tokens were spent either way, so they are recorded either way.
        return Verdict(
            relevance,
            explanation,
            source,
            completion.model,
            completion.prompt_tokens,
            completion.completion_tokens,
            completion.cost_usd,
            completion.tokens_estimated,
        )

    def judge_row(
        self,
        database: Database,
        conversation_id: str,
        question: str,
        answer: str,
        sources: str,
        status: str,
        confidence: float | None,
    ) -> bool:
        """Judge and store. False when the row was already judged (or is unknown)."""
        verdict = self.evaluate(question, answer, sources, status, confidence)
        return database.save_judgement(
            conversation_id,
            relevance=verdict.relevance,
            explanation=verdict.explanation,
            source=verdict.source,
            model=verdict.model,
            prompt_tokens=verdict.prompt_tokens,
            completion_tokens=verdict.completion_tokens,
            cost_usd=verdict.cost_usd,
            tokens_estimated=verdict.tokens_estimated,
        )


def build_judge(settings: Settings) -> Judge:
    return Judge(make_judge_provider(settings))


@dataclass(frozen=True)
class PendingRun:
    judged: int
    failed: int
    skipped: int


def judge_pending(database: Database, judge: Judge, limit: int | None = None) -> PendingRun:
    """Judge every row still PENDING, oldest first. A row whose judge call fails stays PENDING
    for the next run; one judged meanwhile by another process is skipped."""
    judged = failed = skipped = 0
    for row in database.pending_judgements(limit):
        try:
            saved = judge.judge_row(
                database,
                row["id"],
                row["question"],
                row["answer"],
                sources_text(row["sources"] or []),
                row["status"],
                row["confidence"],
            )
        except ProviderError as exc:
            failed += 1
            log.warning("judging %s failed (%s); it stays PENDING", row["id"], exc)
            continue
        if saved:
            judged += 1
        else:
            skipped += 1
    return PendingRun(judged, failed, skipped)
