"""Retention and erasure: `assistant db purge --older-than 90d` and `assistant db forget
--session ID --owner FINGERPRINT` (or `--all-owners`), in PostgreSQL and in this host's spool,
each recorded in the `erasures` table.

Both hold the spool's replay lock while they work: a replay running meanwhile could otherwise
write back rows just deleted from the database.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from assistant.db import Database
from assistant.spool import REPLAY_LOCK, Spool

_AGE = re.compile(r"^\s*(\d+)\s*([hdw])\s*$", re.IGNORECASE)
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}
# Seconds to wait for a replay in progress to finish before giving up.
LOCK_WAIT = 30.0


class RetentionError(RuntimeError):
    """The purge or erasure could not start (the spool's replay held the lock throughout)."""


def parse_age(text: str) -> timedelta:
    """An age such as `90d`, `12h` or `2w` (hours, days, weeks) as a timedelta; raises
    ValueError for anything else, zero included."""
    match = _AGE.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not an age such as 90d, 12h or 2w")
    return timedelta(**{_UNITS[match.group(2).lower()]: int(match.group(1))})


def purge(database: Database, spool: Spool, older_than: timedelta) -> dict[str, Any]:
    """Delete the conversations answered more than `older_than` ago, with their feedback and
    jobs, from PostgreSQL and the spool; returns the `erasures` record (see Database.purge).
    Raises RetentionError, or DatabaseUnavailable while PostgreSQL is down."""
    cutoff = datetime.now(UTC) - older_than
    with _replays_held(database):
        old = {
            entry["row"]["id"]
            for entry in spool.entries()
            if entry["kind"] == "conversation"
            and datetime.fromisoformat(entry["row"]["timestamp"]) < cutoff
        }

        def doomed(entry: dict[str, Any]) -> bool:
            if entry["kind"] == "conversation":
                return entry["row"]["id"] in old
            # A vote given since on a conversation purged from the database is dropped by the
            # next replay, as any vote on an unknown conversation is.
            return (
                entry["conversation_id"] in old
                or datetime.fromisoformat(entry["given_at"]) < cutoff
            )

        return database.purge(cutoff, spool.discard(doomed))


def forget(
    database: Database, spool: Spool, session_id: str, *, owner: str | None
) -> dict[str, Any]:
    """Delete every conversation of `session_id`, with their feedback and jobs, from
    PostgreSQL and the spool (a customer's erasure request); returns the `erasures` record.
    `owner` is the fingerprint of the key the customer asked through: a session id a client
    chose is its key's alone, and another key may hold the same id for another customer.
    None erases the session under every owner. Raises RetentionError, or DatabaseUnavailable
    while PostgreSQL is down."""

    def ours(row: dict[str, Any]) -> bool:
        return row.get("session_id") == session_id and owner in (None, row.get("owner"))

    with _replays_held(database):
        ids = database.session_conversation_ids(session_id, owner) | {
            entry["row"]["id"]
            for entry in spool.entries()
            if entry["kind"] == "conversation" and ours(entry["row"])
        }

        def doomed(entry: dict[str, Any]) -> bool:
            if entry["kind"] == "conversation":
                return entry["row"]["id"] in ids
            return entry["conversation_id"] in ids

        return database.forget(session_id, owner, spool.discard(doomed))


@contextmanager
def _replays_held(database: Database) -> Iterator[None]:
    """The spool's replay lock for the block, waiting up to LOCK_WAIT for a replay to end."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        with database.exclusive(REPLAY_LOCK) as mine:
            if mine:
                yield
                return
        if time.monotonic() > deadline:
            raise RetentionError(f"a spool replay held its lock for {LOCK_WAIT:.0f} s; try again")
        time.sleep(0.5)
