"""POST /feedback (a customer's thumbs up or down, with an optional comment) and
GET /conversations/<id> (one stored exchange with its judged relevance and feedback)."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from assistant.api_models import ConversationResponse, FeedbackRequest, FeedbackResponse
from assistant.keys import current_owner
from assistant.routes.requests import ApiError, json_body, storable, validate
from assistant.routes.services import Services, responses
from assistant.spool import UNAVAILABLE

log = logging.getLogger(__name__)


def blueprint(services: Services) -> Blueprint:
    """The feedback and conversation routes over `services`."""
    database, spool, mask = services.database, services.spool, services.mask
    routes = Blueprint("feedback", __name__)

    @routes.post("/feedback")
    @services.document(
        json=FeedbackRequest,
        resp=responses(FeedbackResponse, *services.post_errors, 404, HTTP_202=FeedbackResponse),
        tags=["feedback"],
        keyed=True,
    )
    def feedback():
        """Record a thumbs up (1) or down (-1); a repeat vote replaces the earlier one."""
        body = validate(FeedbackRequest, json_body())
        reply = {"conversation_id": body.conversation_id, "feedback": body.feedback}
        comment = None if body.comment is None else mask(body.comment)
        owner = current_owner()
        try:
            saved = database.save_feedback(
                body.conversation_id, body.feedback, comment, owner=owner
            )
        except UNAVAILABLE as exc:
            # Unknown ids cannot be told apart while the database is away; replay drops them.
            log.warning("database unavailable, feedback spooled: %s", type(exc).__name__)
            saved = None
        if saved:
            return jsonify({**reply, "status": "saved"})
        if saved is False and not spool.has_conversation(body.conversation_id, owner):
            # Another key's conversation is not told apart from an unknown one.
            raise ApiError(
                404, "conversation_not_found", f"no conversation {body.conversation_id!r}"
            )
        spool.add_feedback(body.conversation_id, body.feedback, comment, owner)
        return jsonify({**reply, "status": "queued"}), 202

    @routes.get("/conversations/<conversation_id>")
    @services.document(
        resp=responses(ConversationResponse, 400, *services.key_errors, 404, 429, 503),
        tags=["conversations"],
        keyed=True,
    )
    def conversation(conversation_id: str):
        """One stored conversation with its judged relevance and feedback; only the key that
        asked it can read it."""
        storable(conversation_id, "conversation_id")
        row = database.get_conversation(conversation_id, current_owner())
        if row is None:
            raise ApiError(404, "conversation_not_found", f"no conversation {conversation_id!r}")
        return jsonify(ConversationResponse.model_validate(row).model_dump(mode="json"))

    return routes
