"""PostgreSQL store: pool, migrations from initdb/, conversations and feedback.

With no database configured it starts an embedded PostgreSQL (pgserver) under data/pgdata, so
the same SQL runs on a laptop with nothing installed and in production.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from assistant.config import Settings

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
)
_INSERT_CONVERSATION = sql.SQL(
    "INSERT INTO conversations ({columns}) VALUES ({values}) ON CONFLICT (id) DO NOTHING"
).format(
    columns=sql.SQL(", ").join(map(sql.Identifier, CONVERSATION_COLUMNS)),
    values=sql.SQL(", ").join(sql.Placeholder(c) for c in CONVERSATION_COLUMNS),
)

_embedded_servers: dict[Path, Any] = {}


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL did not answer in time."""


def embedded_url(pgdata: Path) -> str:
    """Start (or join) the embedded PostgreSQL in `pgdata` and return its URL.

    The server object is kept for the life of the process: pgserver stops the cluster when the
    last process holding it exits.
    """
    import pgserver  # imported here: heavy, and only needed without a configured database

    pgdata = pgdata.resolve()
    if pgdata not in _embedded_servers:
        pgdata.mkdir(parents=True, exist_ok=True)
        _embedded_servers[pgdata] = pgserver.get_server(pgdata, cleanup_mode="stop")
    return _embedded_servers[pgdata].get_uri()


def migration_files(directory: Path) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append((match.group(1), path))
    return found


class Database:
    def __init__(self, url: str, migrations_dir: Path, max_connections: int = 8):
        self.url = url
        self.migrations_dir = migrations_dir
        self.max_connections = max_connections
        self._pool: ConnectionPool | None = None
        self._pool_pid: int | None = None

    @property
    def pool(self) -> ConnectionPool:
        # A pool opened before gunicorn forks must not be shared with the children.
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self.max_connections,
                kwargs={"row_factory": dict_row, "connect_timeout": 5},
                check=ConnectionPool.check_connection,
                open=True,
                name="assistant",
            )
            self._pool_pid = os.getpid()
        return self._pool

    def _connection(self, timeout: float = 5.0):
        try:
            return self.pool.connection(timeout=timeout)
        except PoolTimeout as exc:
            raise DatabaseUnavailable("PostgreSQL did not answer") from exc

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.close()
        self._pool = None

    def migrate(self) -> list[str]:
        """Apply every initdb/NNN_*.sql not yet in schema_migrations, in order, each once."""
        applied_now = []
        with psycopg.connect(self.url, autocommit=False) as conn, conn.transaction():
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
        return applied_now

    def ping(self) -> bool:
        try:
            with self._connection(timeout=2.0) as conn:
                conn.execute("SELECT 1")
            return True
        except (DatabaseUnavailable, psycopg.OperationalError):
            return False

    def save_conversation(self, row: Mapping[str, Any]) -> None:
        values = {column: row.get(column) for column in CONVERSATION_COLUMNS}
        values["sources"] = Jsonb(list(row.get("sources") or []))
        try:
            with self._connection() as conn:
                conn.execute(_INSERT_CONVERSATION, values)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    def save_feedback(self, conversation_id: str, feedback: int, comment: str | None) -> bool:
        """Upsert: the latest vote on a conversation wins. False for an unknown conversation."""
        with self._connection() as conn:
            cursor = conn.execute(
                """
                INSERT INTO feedback (conversation_id, feedback, comment)
                SELECT id, %(feedback)s, %(comment)s FROM conversations WHERE id = %(id)s
                ON CONFLICT (conversation_id) DO UPDATE
                SET feedback = EXCLUDED.feedback, comment = EXCLUDED.comment, timestamp = now()
                """,
                {"id": conversation_id, "feedback": feedback, "comment": comment},
            )
            return cursor.rowcount == 1

    def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        with self._connection() as conn:
            return conn.execute(
                """
                SELECT c.*, f.feedback, f.comment AS feedback_comment
                FROM conversations c LEFT JOIN feedback f ON f.conversation_id = c.id
                WHERE c.id = %s
                """,
                (conversation_id,),
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


def open_database(settings: Settings) -> Database:
    """The configured PostgreSQL, or the embedded one when none is configured."""
    url = settings.database_url
    if not url:
        url = embedded_url(settings.pgdata)
        log.info(
            "no DATABASE_URL or POSTGRES_HOST: using embedded PostgreSQL in %s", settings.pgdata
        )
    return Database(url, settings.migrations_dir)
