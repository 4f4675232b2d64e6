"""Erasure and retention: `purge` (everything older than a cutoff) and `forget` (one
session), each recorded in `erasures`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql

from assistant.db.connection import Connections

# One statement, so a purge or an erasure and its record in `erasures` are one transaction
# and the counts are of one snapshot. The rows are locked first: a vote arriving meanwhile
# waits, then finds its conversation gone.
_ERASE = sql.SQL("""
WITH doomed AS (SELECT id FROM conversations WHERE {which} FOR UPDATE),
gone_feedback AS (
    DELETE FROM feedback WHERE conversation_id IN (SELECT id FROM doomed) RETURNING 1
),
gone_jobs AS (DELETE FROM jobs WHERE key IN (SELECT id FROM doomed) RETURNING 1),
gone AS (DELETE FROM conversations WHERE id IN (SELECT id FROM doomed) RETURNING 1)
INSERT INTO erasures (action, cutoff, conversations, feedback, jobs, spooled)
SELECT %(action)s, %(cutoff)s::timestamptz, (SELECT count(*) FROM gone),
       (SELECT count(*) FROM gone_feedback), (SELECT count(*) FROM gone_jobs), %(spooled)s
RETURNING performed_at, action, cutoff, conversations, feedback, jobs, spooled
""")
_PURGE = _ERASE.format(which=sql.SQL("timestamp < %(cutoff)s"))
# A NULL owner: the session under every key (and rows stored while keys were off).
_FORGET = _ERASE.format(
    which=sql.SQL("session_id = %(session_id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)")
)


class Erasure(Connections):
    """Deleting conversations with their feedback and jobs: `purge`, `forget`, and
    `session_conversation_ids`, what a `forget` also removes from the spool."""

    def session_conversation_ids(self, session_id: str, owner: str | None) -> set[str]:
        """The ids of every stored conversation of a session, abandoned ones included: those
        `owner` (a key's fingerprint) made, or under every owner when it is None."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id FROM conversations WHERE session_id = %(session)s"
                " AND (%(owner)s::text IS NULL OR owner = %(owner)s)",
                {"session": session_id, "owner": owner},
            ).fetchall()
        return {row["id"] for row in rows}

    def purge(self, cutoff: datetime, spooled: int) -> dict[str, Any]:
        """Delete every conversation from before `cutoff` (timezone-aware) with its feedback
        and jobs, and record that in `erasures` with `spooled`, the spool records removed
        alongside. Returns the record: performed_at, action, cutoff and the four counts."""
        with self._connection() as conn:
            return conn.execute(
                _PURGE, {"action": "purge", "cutoff": cutoff, "spooled": spooled}
            ).fetchone()

    def forget(self, session_id: str, owner: str | None, spooled: int) -> dict[str, Any]:
        """Delete every conversation of a session that `owner` (a key's fingerprint; None:
        every owner) made, with its feedback and jobs (an erasure request), and record that in
        `erasures`, without the session id or the owner. Returns the record, as `purge` does."""
        with self._connection() as conn:
            return conn.execute(
                _FORGET,
                {
                    "action": "forget",
                    "cutoff": None,
                    "session_id": session_id,
                    "owner": owner,
                    "spooled": spooled,
                },
            ).fetchone()
