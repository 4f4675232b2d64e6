"""Handoffs to the helpdesk: the transcript a handoff posts, and its delivery's record."""

from __future__ import annotations

from typing import Any

from assistant.db.connection import Connections

# A handoff's transcript holds at most this many turns, the latest: a helpdesk ticket with
# more is not read, and the post must stay a reasonable size.
TRANSCRIPT_TURNS = 100


class Handoffs(Connections):
    """A handoff's transcript (`handoff_transcript`) and its delivery on the conversation
    (`record_handoff_attempt`, `record_handoff_failed`)."""

    def handoff_transcript(
        self, conversation_id: str
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """A handed-off conversation's row (None when it is unknown or erased) and its
        session's turns up to and including it, oldest first, at most TRANSCRIPT_TURNS (the
        latest); each turn: id, question, answer, status, handoff_reason, handoff_delivery,
        sources, timestamp. Streams the customer left unfinished are not turns."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT id, session_id, question, answer, status, handoff_reason, sources,"
                " timestamp, handoff_delivery FROM conversations WHERE id = %s",
                (conversation_id,),
            ).fetchone()
            if row is None:
                return None, []
            turns = conn.execute(
                """
                SELECT id, question, answer, status, handoff_reason, handoff_delivery, sources,
                       timestamp
                FROM conversations
                WHERE (session_id = %(session)s AND status <> 'abandoned'
                       AND timestamp <= %(at)s) OR id = %(id)s
                ORDER BY timestamp DESC, id DESC LIMIT %(turns)s
                """,
                {
                    "session": row["session_id"],
                    "at": row["timestamp"],
                    "id": conversation_id,
                    "turns": TRANSCRIPT_TURNS,
                },
            ).fetchall()
        return row, list(reversed(turns))

    def record_handoff_attempt(
        self, conversation_id: str, *, delivered: bool, http_status: int | None, error: str | None
    ) -> None:
        """Count one post of a handoff to the helpdesk on its conversation: `delivered` when
        the receiver accepted it, with the receiver's HTTP status (None: it never answered)
        and the error's class name otherwise."""
        with self._connection() as conn:
            conn.execute(
                """
                UPDATE conversations SET
                    handoff_attempts = handoff_attempts + 1,
                    handoff_http_status = %(status)s,
                    handoff_error = %(error)s,
                    handoff_delivery = CASE WHEN %(delivered)s THEN 'delivered'
                                            ELSE handoff_delivery END,
                    handoff_delivered_at = CASE WHEN %(delivered)s THEN now()
                                                ELSE handoff_delivered_at END
                WHERE id = %(id)s
                """,
                {
                    "id": conversation_id,
                    "delivered": delivered,
                    "status": http_status,
                    "error": error,
                },
            )

    def record_handoff_failed(self, conversation_id: str) -> None:
        """Mark a handoff whose retries are used up: `failed`, for the team to follow up."""
        with self._connection() as conn:
            conn.execute(
                "UPDATE conversations SET handoff_delivery = 'failed'"
                " WHERE id = %s AND handoff_delivery IS DISTINCT FROM 'delivered'",
                (conversation_id,),
            )
