"""PostgreSQL store: pool, migrations from initdb/, conversations and feedback.

With no database configured it starts an embedded PostgreSQL (pgserver) under data/pgdata, so
the same SQL runs on a laptop with nothing installed and in production.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from assistant.config import Settings
from assistant.embedded_pg import embedded_folder, embedded_url, restart_embedded

log = logging.getLogger(__name__)

_MIGRATION_FILE = re.compile(r"^(\d+)_[\w-]+\.sql$")
# Any constant works; it only has to be the same for every process running migrations.
_MIGRATION_LOCK = 7_224_301

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
# A handoff's transcript holds at most this many turns, the latest: a helpdesk ticket with
# more is not read, and the post must stay a reasonable size.
TRANSCRIPT_TURNS = 100

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
# What the KB failed since %(since)s, for `assistant gaps` and the dashboard's panel: declined
# (out of scope), handed off because retrieval was unsure, or voted down.
_FAILED_QUESTIONS = sql.SQL("""
    SELECT c.question, c.timestamp,
           CASE WHEN c.status = 'out_of_scope' THEN 'declined'
                WHEN c.status = 'handoff' AND c.handoff_reason = 'low_confidence'
                    THEN 'low_confidence'
                ELSE 'voted_down' END AS reason
    FROM conversations c LEFT JOIN feedback f ON f.conversation_id = c.id
    WHERE c.timestamp >= %(since)s
      AND (c.status = 'out_of_scope'
           OR (c.status = 'handoff' AND c.handoff_reason = 'low_confidence')
           OR f.feedback = -1)
""")
_GAP_QUESTIONS = sql.SQL("{} ORDER BY c.timestamp DESC LIMIT %(limit)s").format(_FAILED_QUESTIONS)
# Identical wordings only: `assistant gaps` groups paraphrases, with embeddings SQL lacks.
_GAPS_PANEL = sql.SQL("""
    WITH failed AS ({})
    SELECT min(question) AS question, count(*) AS times,
           count(*) FILTER (WHERE reason = 'declined') AS declined,
           count(*) FILTER (WHERE reason = 'low_confidence') AS low_confidence,
           count(*) FILTER (WHERE reason = 'voted_down') AS voted_down,
           max(timestamp) AS last_asked
    FROM failed GROUP BY lower(btrim(question))
    ORDER BY times DESC, last_asked DESC LIMIT 10
""").format(_FAILED_QUESTIONS)

# A connection back from a query this recently is taken to be alive: probing every checkout
# cost each query an extra round trip. One idle for longer (PostgreSQL may have restarted
# meanwhile) is probed before use, as psycopg_pool's check does.
CHECK_IDLE_SECONDS = 1.0

# After a pool timeout, queries fail at once for this long instead of each waiting the full
# timeout: with PostgreSQL down every request would otherwise stall a worker for seconds. The
# pool keeps reconnecting meanwhile, and `ping` always probes.
FAIL_FAST_SECONDS = 3.0

# Seconds a ping waits for a pooled connection before it takes the database for down (and
# probes it directly from then on).
PING_POOL_TIMEOUT = 0.5
# Seconds a replaced pool lives on for the requests that still hold its connections.
POOL_CLOSE_GRACE = 10.0


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL did not answer in time."""


def describe_url(url: str) -> str:
    """Where a database URL points, without its password: `host:port/dbname`."""
    where = psycopg.conninfo.conninfo_to_dict(url)
    host = where.get("host") or "localhost"
    return f"{host}:{where.get('port') or 5432}/{where.get('dbname', '?')}"


def migration_files(directory: Path) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append((match.group(1), path))
    return found


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


class Database:
    """The store at `url`. `embedded`: the folder of the embedded cluster it runs on, which
    is started again when a ping finds it down."""

    def __init__(
        self,
        url: str,
        migrations_dir: Path,
        max_connections: int = 8,
        embedded: Path | None = None,
    ):
        self.url = url
        self.embedded = embedded
        self._restarting = threading.Lock()
        self.migrations_dir = migrations_dir
        self.max_connections = max_connections
        self._pool: ConnectionPool | None = None
        self._pool_pid: int | None = None
        self._pool_lock = threading.Lock()
        self._down_until = 0.0
        self._used_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self.migrated = False
        self._migrate_lock = threading.Lock()
        self._ping_ok = True
        # When a pooled connection last answered a query, and when one last failed with a
        # connection error: a recent answer with no failure since is as good as a ping.
        self._answered_at = 0.0
        self._failed_at = 0.0

    @property
    def pool(self) -> ConnectionPool:
        # A pool opened before gunicorn forks must not be shared with the children; the lock
        # keeps a worker's first concurrent requests from opening one pool each.
        if self._pool is not None and self._pool_pid == os.getpid():
            return self._pool
        with self._pool_lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                return self._pool
            self._pool = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self.max_connections,
                # Each write is one statement: autocommit spares it a BEGIN and a COMMIT round
                # trip. What needs a transaction opens one (see `stats`).
                kwargs={"row_factory": dict_row, "connect_timeout": 5, "autocommit": True},
                check=self._check,
                open=True,
                name="assistant",
            )
            self._pool_pid = os.getpid()
            return self._pool

    def _check(self, conn: Any) -> None:
        used_at = self._used_at.get(conn)
        if used_at is None or time.monotonic() - used_at > CHECK_IDLE_SECONDS:
            ConnectionPool.check_connection(conn)

    def ensure_migrated(self) -> None:
        """Run the migrations once per process, the first time the database answers: an app
        started while PostgreSQL was down migrates when it is back. Raises DatabaseUnavailable
        or psycopg.OperationalError while it is still down."""
        if self.migrated:
            return
        with self._migrate_lock:
            if not self.migrated:
                if time.monotonic() < self._down_until:
                    raise DatabaseUnavailable("PostgreSQL timed out moments ago")
                try:
                    self.migrate()
                except psycopg.OperationalError:
                    self._down_until = time.monotonic() + FAIL_FAST_SECONDS
                    self._ping_ok = False
                    raise

    @contextmanager
    def _connection(self, timeout: float = 5.0, *, probe: bool = False) -> Iterator[Any]:
        if not probe and not self._usable():
            raise DatabaseUnavailable("PostgreSQL is down")
        if not probe:
            self.ensure_migrated()
        try:
            with self.pool.connection(timeout=timeout) as conn:
                try:
                    yield conn
                finally:
                    self._used_at[conn] = time.monotonic()
            self._answered_at = time.monotonic()
        except PoolTimeout as exc:
            self._failed_at = time.monotonic()
            self._down_until = self._failed_at + FAIL_FAST_SECONDS
            self._ping_ok = False
            raise DatabaseUnavailable("PostgreSQL did not answer") from exc
        except psycopg.OperationalError:
            self._failed_at = time.monotonic()
            raise

    def _usable(self) -> bool:
        # Known down (a pool timeout, or a failed ping): fail at once for FAIL_FAST_SECONDS,
        # instead of every request waiting for the pool's timeout through the whole outage;
        # then one request pings, so a worker that neither /health nor the spool's flusher
        # reaches still finds the database back. The window is renewed before that ping: the
        # other requests keep failing fast, rather than each probing and renewing the pool.
        if time.monotonic() < self._down_until:
            return False
        if self._ping_ok:
            return True
        self._down_until = time.monotonic() + FAIL_FAST_SECONDS
        return self.ping()

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.close()
        self._pool = None

    def migrate(self) -> list[str]:
        """Apply every initdb/NNN_*.sql not yet in schema_migrations, in order, each once."""
        applied_now = []
        with (
            psycopg.connect(self.url, autocommit=False, connect_timeout=5) as conn,
            conn.transaction(),
        ):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, path in migration_files(self.migrations_dir):
                if version in done:
                    continue
                conn.execute(path.read_text(encoding="utf-8"))
                conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES (%s)"
                    " ON CONFLICT (version) DO NOTHING",
                    (version,),
                )
                applied_now.append(version)
        if applied_now:
            log.info("applied migrations %s", ", ".join(applied_now))
        self.migrated = True
        return applied_now

    def ping(self, fresh_for: float = 0.0) -> bool:
        """Whether PostgreSQL answers, fast either way, so /health stays fast through an
        outage. Believed up: `SELECT 1` on a pooled connection, waiting at most
        PING_POOL_TIMEOUT for one. Known down: a direct connection, refused at once, never a
        wait on a pool that is retrying. The first ping that finds it back also gives the pool
        a fresh start: the old one may be waiting out its reconnection backoff.

        `fresh_for` (seconds): a query this process saw answered that recently, with no
        connection error since, counts as the ping, with no round trip. Under load the
        requests' own writes answer it; idle, one real ping per `fresh_for` at most."""
        now = time.monotonic()
        if (
            fresh_for > 0
            and self._ping_ok
            and now >= self._down_until
            and self._failed_at < self._answered_at
            and now - self._answered_at < fresh_for
        ):
            return True
        if self._ping_ok and now >= self._down_until:
            try:
                with self._connection(timeout=PING_POOL_TIMEOUT, probe=True) as conn:
                    conn.execute("SELECT 1")
                return True
            except (DatabaseUnavailable, psycopg.OperationalError):
                self._ping_ok = False
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            self._ping_ok = False
            if self.embedded:
                self._restart_embedded()
            return False
        self._ping_ok, self._down_until = True, 0.0
        self._answered_at = time.monotonic()
        self._renew_pool()
        return True

    def _restart_embedded(self) -> None:
        # In a thread of its own, one at a time: pg_ctl waits seconds for the cluster, and
        # /health must answer in milliseconds meanwhile.
        if not self._restarting.acquire(blocking=False):
            return

        def restart() -> None:
            try:
                restart_embedded(self.embedded)
            except (subprocess.SubprocessError, AssertionError, OSError) as exc:
                log.warning("embedded PostgreSQL did not start again: %s", type(exc).__name__)
            finally:
                self._restarting.release()

        log.warning("embedded PostgreSQL is down: starting it again")
        threading.Thread(target=restart, name="embedded-restart", daemon=True).start()

    def _renew_pool(self) -> None:
        with self._pool_lock:
            old, self._pool = self._pool, None
        if old is not None and self._pool_pid == os.getpid():
            # Closed once the requests still holding its connections are done with them.
            closer = threading.Timer(POOL_CLOSE_GRACE, old.close)
            closer.daemon = True
            closer.start()

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

    def claim_job(
        self, worker: str, lease: float, kinds: Sequence[str] = ("judge",)
    ) -> dict[str, Any] | None:
        """The next job of one of `kinds` ready to run, marked running by `worker`, or None. A
        job another process holds is skipped (FOR UPDATE SKIP LOCKED), and one left running
        longer than `lease` seconds (its worker died) is taken over. Kinds a runner cannot run
        (a handoff, where no webhook is configured) wait for one that can."""
        with self._connection() as conn:
            return conn.execute(
                """
                UPDATE jobs SET status = 'running', attempts = attempts + 1,
                                locked_by = %(worker)s, locked_at = now()
                WHERE id = (
                    SELECT id FROM jobs
                    WHERE ((status = 'queued' AND run_after <= now())
                           OR (status = 'running'
                               AND locked_at < now() - make_interval(secs => %(lease)s)))
                      AND kind = ANY(%(kinds)s)
                    ORDER BY run_after, id
                    FOR UPDATE SKIP LOCKED
                    LIMIT 1
                )
                RETURNING id, kind, key, attempts
                """,
                {"worker": worker, "lease": lease, "kinds": list(kinds)},
            ).fetchone()

    def finish_job(self, job_id: int, worker: str) -> None:
        """Mark a job done (only if `worker` still holds it)."""
        with self._connection() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'done', finished_at = now(), last_error = NULL"
                " WHERE id = %s AND locked_by = %s AND status = 'running'",
                (job_id, worker),
            )

    def retry_job(self, job_id: int, worker: str, error: str, delay: float | None) -> None:
        """Back to the queue after `delay` seconds, or `failed` for good when delay is None."""
        with self._connection() as conn:
            conn.execute(
                """
                UPDATE jobs SET
                    status = CASE WHEN %(delay)s::float8 IS NULL THEN 'failed' ELSE 'queued' END,
                    run_after = now() + make_interval(secs => coalesce(%(delay)s::float8, 0)),
                    last_error = %(error)s, locked_by = NULL, locked_at = NULL,
                    finished_at = CASE WHEN %(delay)s::float8 IS NULL THEN now() END
                WHERE id = %(id)s AND locked_by = %(worker)s AND status = 'running'
                """,
                {"id": job_id, "worker": worker, "error": error, "delay": delay},
            )

    def job_counts(self) -> dict[str, int]:
        """Jobs by status: queued, running, failed (done ones are history)."""
        with self._connection() as conn:
            row = conn.execute(
                """
                SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
                       count(*) FILTER (WHERE status = 'running') AS running,
                       count(*) FILTER (WHERE status = 'failed') AS failed
                FROM jobs WHERE status <> 'done'
                """
            ).fetchone()
        return dict(row)

    @contextmanager
    def exclusive(self, key: int) -> Iterator[bool]:
        """A PostgreSQL advisory lock on `key` for the block, across processes and replicas:
        yields True when this process holds it, False when another does (no waiting)."""
        with self._connection() as conn:
            held = conn.execute("SELECT pg_try_advisory_lock(%s) AS held", (key,)).fetchone()
            try:
                yield bool(held["held"])
            finally:
                if held["held"]:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

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

    def gap_questions(self, since: datetime, limit: int = 2000) -> list[dict[str, Any]]:
        """The questions since `since` that the knowledge base failed, the latest `limit`:
        each with `question`, `timestamp` and `reason`: `declined` (out of scope),
        `low_confidence` (handed off because retrieval was unsure) or `voted_down`."""
        with self._connection() as conn:
            return conn.execute(
                _GAP_QUESTIONS,
                {"since": since, "limit": limit},
            ).fetchall()

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
        with self._connection() as conn:
            return conn.execute(
                "SELECT (SELECT count(*) FROM conversations) AS conversations,"
                " (SELECT count(*) FROM feedback) AS feedback"
            ).fetchone()

    def pending_judgements(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Conversations still waiting for a relevance verdict, oldest first. A stream the
        customer abandoned delivered nothing to judge: it is left out."""
        with self._connection() as conn:
            return conn.execute(
                """
                SELECT id, question, answer, sources, status, confidence
                FROM conversations WHERE relevance = 'PENDING' AND status <> 'abandoned'
                ORDER BY timestamp, id LIMIT %s
                """,
                (limit,),
            ).fetchall()

    def save_judgement(
        self,
        conversation_id: str,
        *,
        relevance: str,
        explanation: str,
        source: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        tokens_estimated: bool,
    ) -> bool:
        """Record a verdict on a PENDING row and add the judge's cost to the conversation's.

        Only a PENDING row is updated, so a verdict is written once and its cost counted once
        even when the background worker and `assistant judge --pending` race. False when the
        row is unknown or already judged.
        """
        with self._connection() as conn:
            cursor = conn.execute(
                """
                UPDATE conversations SET
                    relevance = %(relevance)s,
                    relevance_explanation = %(explanation)s,
                    relevance_source = %(source)s,
                    judge_model = %(model)s,
                    judged_at = now(),
                    eval_prompt_tokens = %(prompt_tokens)s,
                    eval_completion_tokens = %(completion_tokens)s,
                    eval_total_tokens = %(prompt_tokens)s + %(completion_tokens)s,
                    eval_tokens_estimated = %(tokens_estimated)s,
                    cost_usd = cost_usd + %(cost_usd)s
                WHERE id = %(id)s AND relevance = 'PENDING'
                """,
                {
                    "id": conversation_id,
                    "relevance": relevance,
                    "explanation": explanation,
                    "source": source,
                    "model": model,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "cost_usd": cost_usd,
                    "tokens_estimated": tokens_estimated,
                },
            )
            return cursor.rowcount == 1

    def stats(self, since: datetime) -> dict[str, Any]:
        """The dashboard's figures for conversations since `since`, aggregated in SQL.

        Like the Grafana panels, votes count by when they were given, everything else by when
        the conversation took place; `fallback` is an answer the extractive fallback gave.

        Outcomes, over the conversations that are support questions, neither small talk nor a
        contact given after a handoff (that one is counted in `status_mix` only, never as a
        handoff of its own; None without any):
        `resolution_rate`, the share answered, not voted down, and not followed by another
        question of the session within 10 minutes (an answer younger than that
        counts as resolved until one comes); `handoff_rate`, the share handed off, and
        `handoff_rate_by_reason` ({reason: share}, reasons with a handoff only); `csat`, the
        share of thumbs up among the votes given (the same as `feedback.satisfaction`).
        `knowledge_gaps`: the 10 questions most often failed (declined, handed off for low
        confidence, voted down), identical wordings counted together.
        """
        params = {"since": since}
        with self._connection() as conn, conn.transaction():
            # One snapshot, so the figures agree with each other while answers keep arriving.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            summary = conn.execute(
                """
                SELECT count(*) AS conversations,
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY c.response_time) AS p50,
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY c.response_time) AS p95,
                       avg(c.response_time) AS mean,
                       coalesce(sum(c.cost_usd), 0) AS cost_usd,
                       avg((c.status = 'answered' AND f.feedback IS DISTINCT FROM -1
                            -- "no further question": another message of the session, not
                            -- small talk (a "thanks" is no sign of a failed answer) nor a
                            -- contact given after a handoff (no question either), within
                            -- 10 minutes; the Grafana panel holds the same condition
                            AND NOT EXISTS (
                                SELECT 1 FROM conversations n
                                WHERE n.session_id = c.session_id
                                  AND n.timestamp > c.timestamp
                                  AND n.timestamp <= c.timestamp + interval '10 minutes'
                                  AND n.status NOT IN ('small_talk', 'contact')))::int)
                           FILTER (WHERE c.status NOT IN ('small_talk', 'contact'))::float
                           AS resolution_rate,
                       avg((c.status = 'handoff')::int)
                           FILTER (WHERE c.status NOT IN ('small_talk', 'contact'))::float
                           AS handoff_rate,
                       coalesce(sum(c.prompt_tokens), 0) AS prompt,
                       coalesce(sum(c.completion_tokens), 0) AS completion,
                       coalesce(sum(c.eval_total_tokens), 0) AS judge,
                       count(*) FILTER (WHERE c.relevance = 'RELEVANT') AS "RELEVANT",
                       count(*) FILTER (WHERE c.relevance = 'PARTLY_RELEVANT')
                           AS "PARTLY_RELEVANT",
                       count(*) FILTER (WHERE c.relevance = 'NON_RELEVANT') AS "NON_RELEVANT",
                       count(*) FILTER (WHERE c.relevance = 'PENDING') AS "PENDING",
                       count(*) FILTER (WHERE c.relevance = 'UNJUDGED') AS "UNJUDGED"
                FROM conversations c LEFT JOIN feedback f ON f.conversation_id = c.id
                WHERE c.timestamp >= %(since)s
                """,
                params,
            ).fetchone()
            handoffs = conn.execute(
                """
                SELECT coalesce(handoff_reason, 'unspecified') AS reason,
                       count(*)::float / (
                           SELECT count(*) FROM conversations
                           WHERE timestamp >= %(since)s
                             AND status NOT IN ('small_talk', 'contact')
                       ) AS rate
                FROM conversations WHERE timestamp >= %(since)s AND status = 'handoff'
                GROUP BY 1 ORDER BY 2 DESC, 1
                """,
                params,
            ).fetchall()
            feedback = conn.execute(
                """
                SELECT count(*) FILTER (WHERE feedback = 1) AS thumbs_up,
                       count(*) FILTER (WHERE feedback = -1) AS thumbs_down,
                       avg((feedback = 1)::int)::float AS satisfaction
                FROM feedback WHERE timestamp >= %(since)s
                """,
                params,
            ).fetchone()
            hourly = conn.execute(
                """
                SELECT date_bin('1 hour', timestamp, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour,
                       count(*) AS conversations,
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time) AS p50,
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time) AS p95,
                       sum(cost_usd) AS cost_usd
                FROM conversations WHERE timestamp >= %(since)s
                GROUP BY 1 ORDER BY 1
                """,
                params,
            ).fetchall()
            status_mix = conn.execute(
                """
                SELECT CASE WHEN fallback AND status = 'answered' THEN 'fallback' ELSE status END
                           AS status,
                       count(*) AS conversations
                FROM conversations WHERE timestamp >= %(since)s
                GROUP BY 1 ORDER BY 2 DESC, 1
                """,
                params,
            ).fetchall()
            by_model = conn.execute(
                """
                SELECT model_used AS model, count(*) AS conversations, sum(cost_usd) AS cost_usd,
                       sum(prompt_tokens) AS prompt_tokens,
                       sum(completion_tokens) AS completion_tokens,
                       sum(eval_total_tokens) AS judge_tokens
                FROM conversations WHERE timestamp >= %(since)s
                GROUP BY model_used ORDER BY 3 DESC, 2 DESC, 1
                """,
                params,
            ).fetchall()
            top_intents = conn.execute(
                """
                SELECT c.intent, count(*) AS conversations,
                       count(*) FILTER (WHERE f.feedback = -1) AS thumbs_down
                FROM conversations c LEFT JOIN feedback f ON f.conversation_id = c.id
                WHERE c.timestamp >= %(since)s AND c.intent IS NOT NULL
                      AND c.status <> 'out_of_scope'
                GROUP BY c.intent ORDER BY 2 DESC, 1 LIMIT 10
                """,
                params,
            ).fetchall()
            # The dashboard's Knowledge gaps panel: identical wordings only (`assistant gaps`
            # groups paraphrases, with embeddings SQL does not have).
            gaps = conn.execute(
                _GAPS_PANEL,
                params,
            ).fetchall()
        tokens = {key: summary[key] for key in ("prompt", "completion", "judge")}
        return {
            "since": since,
            "conversations": summary["conversations"],
            "response_time": {key: summary[key] for key in ("p50", "p95", "mean")},
            "resolution_rate": summary["resolution_rate"],
            "handoff_rate": summary["handoff_rate"],
            "handoff_rate_by_reason": {row["reason"]: row["rate"] for row in handoffs},
            "csat": feedback["satisfaction"],
            "cost_usd": summary["cost_usd"],
            "tokens": {**tokens, "total": sum(tokens.values())},
            "relevance": {
                key: summary[key]
                for key in ("RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT", "PENDING", "UNJUDGED")
            },
            "feedback": feedback,
            "hourly": hourly,
            "status_mix": status_mix,
            "cost_by_model": by_model,
            "top_intents": top_intents,
            "knowledge_gaps": gaps,
        }


def open_database(settings: Settings) -> Database:
    """The configured PostgreSQL, or the embedded one when none is configured."""
    url = settings.database_url
    if not url:
        url = embedded_url(settings.pgdata)
        log.info(
            "no DATABASE_URL or POSTGRES_HOST: using embedded PostgreSQL in %s", settings.pgdata
        )
    return Database(url, settings.migrations_dir, embedded=embedded_folder(url))
