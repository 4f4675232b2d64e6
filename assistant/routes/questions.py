"""POST /question and POST /question/stream: an answer, a decline or a handoff, stored (or
spooled) before the reply leaves."""

from __future__ import annotations

import json
import logging
from contextlib import closing
from dataclasses import asdict
from typing import Any

import psycopg
from flask import Blueprint, g, jsonify

from assistant.answers import ABANDONED, CONTACT, Answer, Turn
from assistant.api_models import AnswerResponse, QuestionRequest
from assistant.db import DatabaseUnavailable
from assistant.keys import PUBLISHABLE, current_owner
from assistant.llm import ProviderError
from assistant.metrics import count_answer
from assistant.privacy import mask_cards
from assistant.rag import Retraction
from assistant.routes.requests import ApiError, json_body, validate
from assistant.routes.services import Services, responses
from assistant.spool import UNAVAILABLE, SpoolUnavailable

log = logging.getLogger(__name__)


def conversation_row(answer: Answer, owner: str | None = None) -> dict[str, Any]:
    """The stored row of an answer; `owner` is the asking key's fingerprint (None, keys off)."""
    row = asdict(answer)
    row["id"] = answer.conversation_id
    row["total_tokens"] = answer.total_tokens
    row["owner"] = owner
    return row


def _sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def blueprint(services: Services) -> Blueprint:
    """The question routes over `services`."""
    settings, assistant, database, spool = (
        services.settings,
        services.assistant,
        services.database,
        services.spool,
    )
    mask = services.mask
    routes = Blueprint("questions", __name__)
    documented = responses(AnswerResponse, *services.post_errors)

    def read_question() -> tuple[str, str | None, list[Turn]]:
        body = validate(QuestionRequest, json_body())
        text = mask(body.question.strip())
        if not text:
            raise ApiError(400, "invalid_request", "question: must not be blank")
        history = []
        if body.session_id:
            history = session_history(body.session_id)
        return text, body.session_id, history

    def session_history(session_id: str) -> list[Turn]:
        """The session's earlier turns under the caller's key. A publishable key is shared by
        every visitor of a website, so it may only continue a session the server issued to
        it, never start one under an id of its own choosing."""
        owner = current_owner()
        try:
            # Rows stored before masking (or before PII_MASKING was on) are masked here.
            turns = [
                Turn(mask(q), mask_cards(a), status)
                for q, a, status in database.session_history(session_id, owner)
            ]
            caller = g.get("caller")
            publishable = caller is not None and caller.kind == PUBLISHABLE
            if not turns and publishable and not database.has_session(session_id, owner):
                raise ApiError(404, "session_not_found", "no such session for this key")
        except UNAVAILABLE as exc:
            # Without its history a follow-up is answered as a fresh question, not refused.
            log.warning("session history unavailable: %s", type(exc).__name__)
            return []
        return turns

    def record(answer: Answer, owner: str | None) -> None:
        """Stored (or spooled) before the reply leaves, with the job that judges it later,
        off the request path. Raises SpoolUnavailable when neither the database nor the spool
        can keep it."""
        count_answer(
            answer.status,
            answer.model_used,
            answer.prompt_tokens,
            answer.completion_tokens,
            answer.cost_usd,
            answer.error if answer.fallback else None,
        )
        # A model cannot have seen the customer's card, but may invent one. Answers keep their
        # emails and phones: those are the business's own contact details.
        answer.answer = mask_cards(answer.answer)
        row = conversation_row(answer, owner)
        # A contact given after a handoff reaches the helpdesk the way the handoff did.
        if answer.status in ("handoff", CONTACT) and settings.handoff_webhook_url:
            row["handoff_delivery"] = "queued"
        if answer.status == ABANDONED:
            row["relevance"] = "UNJUDGED"
            row["relevance_explanation"] = "the customer left before the answer was complete"
        try:
            database.save_conversation(row)
            # Stored without the spool: whatever stopped it writing no longer loses rows.
            spool.failing = None
        except UNAVAILABLE as exc:
            log.warning("database unavailable, conversation spooled: %s", type(exc).__name__)
            # Replayed, it is saved with its judge job like any other row.
            spool.add_conversation(row)

    @routes.post("/question")
    @services.document(json=QuestionRequest, resp=documented, tags=["questions"], keyed=True)
    def question():
        """Answer a customer's question from the knowledge base, or decline or hand off."""
        answer = assistant.answer(*read_question())
        record(answer, current_owner())
        return jsonify(answer.public())

    @routes.post("/question/stream")
    @services.document(
        json=QuestionRequest,
        resp=responses(
            (None, "text/event-stream: `delta` events, then one `answer`"), *services.post_errors
        ),
        tags=["questions"],
        keyed=True,
    )
    def question_stream():
        """The same answer as server-sent events, so a UI can show it as it is written."""
        text, session_id, history = read_question()
        # The events are written after the request's context is gone.
        owner = current_owner()

        def keep_abandoned(answer: Answer) -> None:
            try:
                record(answer, owner)
            except SpoolUnavailable as exc:
                log.error("an abandoned stream's row is lost: %s", exc)

        def failed(code: str, message: str) -> str:
            return _sse("error", {"error": {"code": code, "message": message}})

        def events():
            # Closed explicitly when the client goes away: the model's request ends with it.
            with closing(assistant.stream(text, session_id, history, keep_abandoned)) as parts:
                try:
                    for part in parts:
                        if isinstance(part, Answer):
                            record(part, owner)
                            yield _sse("answer", part.public())
                        elif isinstance(part, Retraction):
                            yield _sse("reset", {"reason": part.reason})
                        else:
                            yield _sse("delta", {"text": part})
                except SpoolUnavailable as exc:
                    log.error("database unavailable and %s", exc)
                    yield failed("storage_unavailable", "the answer could not be stored")
                except (ProviderError, DatabaseUnavailable, psycopg.OperationalError) as exc:
                    log.error("stream failed: %s", type(exc).__name__)
                    yield failed("stream_failed", "the answer could not be completed")
                except Exception:
                    # Past the 200 no error status can be sent: the stream still ends in an event.
                    log.exception("stream failed")
                    yield failed("internal_error", "an unexpected error occurred")

        # A (body, status, headers) tuple: spectree passes it through without reading the
        # generator, which a Response object would have it drain before the first byte.
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
        return events(), 200, headers

    return routes
