"""Conversations and feedback: saving answers (one, or a spool's replay, with their jobs),
votes, a session's history, and reading one conversation, the latest ones and the counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from assistant.db.connection import Connections, DatabaseUnavailable

CONVERSATION_COLUMNS = (
    "id",
    "session_id",
    "question",
    "answer",
    "model_used",
    "provider",
    "intent",
    "category",
    "confidence",
    "status",
    "handoff_reason",
    "fallback",
    "error",
    "sources",
    "response_time",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "tokens_estimated",
    "cited_sources",
    "uncited",
    "relevance",
    "relevance_explanation",
    "owner",
    "handoff_delivery",
)
# A row replayed from the spool keeps the time it was answered, not the time it was replayed.
# Rendered to text once: a composed statement is composed again on every execution, which
# took about 8% of a worker's CPU under load (py-spy, `assistant bench api`).
_INSERT_CONVERSATION = (
    sql.SQL(
        "INSERT INTO conversations ({columns}, timestamp)"
        " VALUES ({values}, coalesce(%(timestamp)s::timestamptz, now()))"
        " ON CONFLICT (id) DO NOTHING"
    )
    .format(
        columns=sql.SQL(", ").join(map(sql.Identifier, CONVERSATION_COLUMNS)),
        values=sql.SQL(", ").join(sql.Placeholder(c) for c in CONVERSATION_COLUMNS),
    )
    .as_string()
)

# One statement for a whole batch's judge jobs (a spool's replay inserts thousands at once).
_INSERT_JUDGE_JOBS = (
    "INSERT INTO jobs (kind, key) SELECT 'judge', key FROM unnest(%(keys)s::text[]) AS key"
    " ON CONFLICT (kind, key) DO NOTHING"
)
_INSERT_HANDOFF_JOB = (
    "INSERT INTO jobs (kind, key) VALUES ('handoff', %(key)s) ON CONFLICT (kind, key) DO NOTHING"
)


def _conversation_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """The bound parameters of `_INSERT_CONVERSATION` for one answer row."""
    values = {column: row.get(column) for column in CONVERSATION_COLUMNS}
    values["sources"] = Jsonb(list(row.get("sources") or []))
    values["tokens_estimated"] = bool(row.get("tokens_estimated"))
    values["cited_sources"] = Jsonb(list(row.get("cited_sources") or []))
    values["uncited"] = bool(row.get("uncited"))
    values["relevance"] = row.get("relevance") or "PENDING"
    values["relevance_explanation"] = row.get("relevance_explanation") or ""
    values["timestamp"] = row.get("timestamp")
    return values


class Conversations(Connections):
    """Conversations and their feedback: `save_conversation(s)`, `save_feedback`,
    `session_history`, `has_session`, `get_conversation`, `recent` and `counts`."""

    def save_conversation(self, row: Mapping[str, Any]) -> None:
        """Insert one conversation, and its judge job in the same transaction; a row whose id
        is stored already is left as it is."""
        self.save_conversations([row])

    def save_conversations(self, rows: Sequence[Mapping[str, Any]], batch: int = 1000) -> None:
        """Insert conversations (one, or a spool's replay), `batch` to a transaction, each
        with a `judge` job unless it is already judged (an abandoned stream's row), and a
        `handoff` job when its `handoff_delivery` is `queued` (a handoff to post to the
        helpdesk)."""
        try:
            with self._connection() as conn:
                for start in range(0, len(rows), batch):
                    chunk = rows[start : start + batch]
                    judged = [
                        row["id"]
                        for row in chunk
                        if (row.get("relevance") or "PENDING") == "PENDING"
                    ]
                    handoffs = [
                        {"key": row["id"]}
                        for row in chunk
                        if row.get("handoff_delivery") == "queued"
                    ]
                    with conn.transaction(), conn.cursor() as cursor:
                        cursor.executemany(
                            _INSERT_CONVERSATION, [_conversation_values(row) for row in chunk]
                        )
                        if judged:
                            cursor.execute(_INSERT_JUDGE_JOBS, {"keys": judged})
                        if handoffs:
                            cursor.executemany(_INSERT_HANDOFF_JOB, handoffs)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    def save_feedback(
        self,
        conversation_id: str,
        feedback: int,
        comment: str | None,
        given_at: datetime | None = None,
        owner: str | None = None,
    ) -> bool:
        """Upsert: the latest vote on a conversation wins. False for an unknown conversation,
        or one `owner` (a key's fingerprint; None with keys off) did not create.

        `given_at` is when a spooled vote was cast: replayed late, it must not overwrite a
        vote given after it.
        """
        params = {
            "id": conversation_id,
            "feedback": feedback,
            "comment": comment,
            "at": given_at,
            "owner": owner,
        }
        with self._connection() as conn:
            cursor = conn.execute(
                """
                INSERT INTO feedback (conversation_id, feedback, comment, timestamp)
                SELECT id, %(feedback)s, %(comment)s, coalesce(%(at)s::timestamptz, now())
                FROM conversations
                WHERE id = %(id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)
                ON CONFLICT (conversation_id) DO UPDATE
                SET feedback = EXCLUDED.feedback, comment = EXCLUDED.comment,
                    timestamp = EXCLUDED.timestamp
                WHERE feedback.timestamp <= EXCLUDED.timestamp
                """,
                params,
            )
            if cursor.rowcount == 1:
                return True
            # A vote older than the stored one is still a vote on a known conversation.
            return (
                conn.execute(
                    "SELECT 1 FROM conversations"
                    " WHERE id = %(id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)",
                    params,
                ).fetchone()
                is not None
            )

    def session_history(
        self, session_id: str, owner: str | None = None, turns: int = 3
    ) -> list[tuple[str, str, str]]:
        """The session's last `turns` (question, answer, status) triples, oldest first (a
        stream the customer left unfinished is not a turn); the status tells a session already
        handed off. With keys on, a session is its owner's: the same id under another key is
        another session."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT question, answer, status FROM conversations"
                " WHERE session_id = %(session)s AND status <> 'abandoned'"
                " AND (%(owner)s::text IS NULL OR owner = %(owner)s)"
                " ORDER BY timestamp DESC LIMIT %(turns)s",
                {"session": session_id, "owner": owner, "turns": turns},
            ).fetchall()
        return [(row["question"], row["answer"], row["status"]) for row in reversed(rows)]

    def has_session(self, session_id: str, owner: str | None) -> bool:
        """Whether `owner` has a conversation in this session (abandoned ones count)."""
        with self._connection() as conn:
            return (
                conn.execute(
                    "SELECT 1 FROM conversations WHERE session_id = %(session)s"
                    " AND (%(owner)s::text IS NULL OR owner = %(owner)s) LIMIT 1",
                    {"session": session_id, "owner": owner},
                ).fetchone()
                is not None
            )

    def get_conversation(
        self, conversation_id: str, owner: str | None = None
    ) -> dict[str, Any] | None:
        """One conversation with its feedback; None when unknown, or not `owner`'s."""
        with self._connection() as conn:
            return conn.execute(
                """
                SELECT c.*, f.feedback, f.comment AS feedback_comment
                FROM conversations c LEFT JOIN feedback f ON f.conversation_id = c.id
                WHERE c.id = %(id)s AND (%(owner)s::text IS NULL OR c.owner = %(owner)s)
                """,
                {"id": conversation_id, "owner": owner},
            ).fetchone()

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest `limit` conversations, newest first, with their vote (None without one):
        what `assistant db` prints."""
        with self._connection() as conn:
            return conn.execute(
                """
                SELECT c.id, c.timestamp, c.question, c.intent, c.status, c.model_used,
                       c.response_time, f.feedback
                FROM conversations c LEFT JOIN feedback f ON f.conversation_id = c.id
                ORDER BY c.timestamp DESC LIMIT %s
                """,
                (limit,),
            ).fetchall()

    def counts(self) -> dict[str, int]:
        """How many rows `conversations` and `feedback` hold."""
        with self._connection() as conn:
            return conn.execute(
                "SELECT (SELECT count(*) FROM conversations) AS conversations,"
                " (SELECT count(*) FROM feedback) AS feedback"
            ).fetchone()
