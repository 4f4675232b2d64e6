"""PostgreSQL store: pool, migrations from initdb/, conversations and feedback.

With no database configured it starts an embedded PostgreSQL (pgserver) under data/pgdata, so
the same SQL runs on a laptop with nothing installed and in production.

`Database` is composed of one mixin per module:

- `connection`: the pool, failing fast while PostgreSQL is down, `ping`, restarting the
  embedded cluster, and the migrations (`Connections`, which the others build on);
- `conversations`: saving answers and votes, a session's history, reading conversations;
- `handoffs`: a handoff's transcript and the record of its delivery to the helpdesk;
- `job_queue`: the `jobs` table (claim, finish, retry, counts) and advisory locks;
- `erasure`: retention and erasure (`purge`, `forget`);
- `judgements`: the relevance judge's pending rows and verdicts;
- `stats`: the dashboard's figures and the knowledge-gap queries.
"""

from __future__ import annotations

import logging

from assistant.config import Settings
from assistant.db.connection import (
    CHECK_IDLE_SECONDS,
    FAIL_FAST_SECONDS,
    PING_POOL_TIMEOUT,
    POOL_CLOSE_GRACE,
    DatabaseUnavailable,
    describe_url,
    migration_files,
)
from assistant.db.conversations import CONVERSATION_COLUMNS, Conversations
from assistant.db.erasure import Erasure
from assistant.db.handoffs import TRANSCRIPT_TURNS, Handoffs
from assistant.db.job_queue import JobQueue
from assistant.db.judgements import Judgements
from assistant.db.stats import Stats
from assistant.embedded_pg import embedded_folder, embedded_url

log = logging.getLogger(__name__)

__all__ = [
    "CHECK_IDLE_SECONDS",
    "CONVERSATION_COLUMNS",
    "FAIL_FAST_SECONDS",
    "PING_POOL_TIMEOUT",
    "POOL_CLOSE_GRACE",
    "TRANSCRIPT_TURNS",
    "Database",
    "DatabaseUnavailable",
    "describe_url",
    "migration_files",
    "open_database",
]


class Database(Conversations, Handoffs, JobQueue, Erasure, Judgements, Stats):
    """The store at `url`. `embedded`: the folder of the embedded cluster it runs on, which
    is started again when a ping finds it down."""


def open_database(settings: Settings) -> Database:
    """The configured PostgreSQL, or the embedded one when none is configured."""
    url = settings.database_url
    if not url:
        url = embedded_url(settings.pgdata)
        log.info(
            "no DATABASE_URL or POSTGRES_HOST: using embedded PostgreSQL in %s", settings.pgdata
        )
    return Database(url, settings.migrations_dir, embedded=embedded_folder(url))
