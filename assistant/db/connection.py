"""The connection every query goes through: the pool, failing fast while PostgreSQL is down,
the ping /health reads, starting an embedded cluster again, and the migrations from initdb/."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from assistant.embedded_pg import restart_embedded

log = logging.getLogger(__name__)

_MIGRATION_FILE = re.compile(r"^(\d+)_[\w-]+\.sql$")
# Any constant works; it only has to be the same for every process running migrations.
_MIGRATION_LOCK = 7_224_301

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
    """The migrations in `directory`, `(version, path)` in file-name order: each
    `NNN_name.sql`; other files are ignored."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append((match.group(1), path))
    return found


class Connections:
    """The pool and its health, which every other part of `Database` builds on: `_connection`
    (fail fast while PostgreSQL is known down, migrate on first use), `ping`, the restart of
    an embedded cluster, `migrate` and `close`."""

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
        """Close this process's pool (a forked child's inherited pool is left alone); the next
        query opens a new one."""
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
