"""Shared fixtures: real PostgreSQL servers (embedded, and the local service when configured)."""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest
import requests

from assistant.config import PROJECT_ROOT, Settings
from assistant.db import Database

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
BITEXT_DEV = SHARED_DATA / "bitext-media-dev.csv"
# Our own KB in Bitext's format (five phrasings per intent): the intent-model path.
LABELLED_KB = Path(__file__).parent / "data" / "labelled-kb.csv"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Every Database a test made, directly or through create_app: one left open keeps its pool
# reconnecting to a dropped scratch database, and logs "error connecting" after the summary.
_databases: weakref.WeakSet[Database] = weakref.WeakSet()


@pytest.fixture(scope="session", autouse=True)
def _track_databases():
    original = Database.__init__

    def tracked(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _databases.add(self)

    Database.__init__ = tracked
    yield
    Database.__init__ = original
    _close_databases()
    # Apps the tests made keep their background threads (job runners, spool flushers) until
    # the interpreter exits, and those reconnect to scratch databases already dropped: their
    # warnings, after the summary, would be about the tests' leftovers, not about the code.
    logging.disable(logging.CRITICAL)


def _close_databases(dbname: str | None = None) -> None:
    """Close the pools of the tests' Databases on `dbname` (None: all of them)."""
    for database in list(_databases):
        if (
            dbname is None
            or psycopg.conninfo.conninfo_to_dict(database.url).get("dbname") == dbname
        ):
            database.close()


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory):
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    _close_databases()
    server.cleanup()


def stop_postgres(server) -> None:
    """Stop a test's own pgserver cluster and wait until its postmaster is gone, so an outage
    test starts from a stopped database. pgserver's `cleanup` stops it only for the last
    handle it knows of; should it leave the postmaster running, a fast shutdown (SIGINT, what
    `pg_ctl stop` sends) stops it here. Raises AssertionError when it still runs after 30 s."""
    import signal

    import psutil
    from pgserver.utils import PostmasterInfo

    server.cleanup()
    running = PostmasterInfo.read_from_pgdata(server.pgdata)
    if running is None or not running.is_running():
        return
    try:
        # A postmaster.pid left behind may name a pid reused by another program since.
        if "postgres" not in running.process.name():
            return
        running.process.send_signal(signal.SIGINT)
        running.process.wait(timeout=30)
    except psutil.NoSuchProcess:
        return  # it stopped between the reading and the signal
    except psutil.TimeoutExpired:
        raise AssertionError(f"PostgreSQL in {server.pgdata} did not stop") from None


def _scratch_database(admin_url: str):
    """A throwaway database on `admin_url`'s server, so tests never touch existing data."""
    name = f"msa_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    return name, url


def _drop_scratch(admin_url: str, name: str) -> None:
    _close_databases(name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(name)
            )
        )


@pytest.fixture(scope="session", params=["embedded", "service"])
def database_url(request, embedded_server):
    """Each database test runs on the embedded cluster and, when TEST_DATABASE_URL is set, on
    that server too."""
    if request.param == "embedded":
        admin = embedded_server.get_uri()
    else:
        admin = os.environ.get("TEST_DATABASE_URL")
        if not admin:
            pytest.skip("TEST_DATABASE_URL is not set (.ci/run sets it to 127.0.0.1:5432)")
    name, url = _scratch_database(admin)
    yield url
    _drop_scratch(admin, name)


@pytest.fixture
def fresh_database_url(database_url):
    """A brand-new empty database on the same server, for tests of migrations."""
    admin = database_url
    name, url = _scratch_database(admin)
    yield url
    _drop_scratch(admin, name)


@pytest.fixture
def own_database(fresh_database_url, settings) -> Iterator[Database]:
    """An empty, migrated database of this test's own: its row count is this test's."""
    database = Database(fresh_database_url, settings.migrations_dir)
    database.migrate()
    yield database
    database.close()


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """Serve a stand-in HTTP server from a daemon thread for the block."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def redis_url() -> str:
    """The machine's Redis (127.0.0.1:6379), or a skip saying it is absent."""
    import redis

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    return url


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    return replace(
        Settings.from_env(env={}),
        kb_source="demo",
        llm_provider="extractive",
        data_dir=tmp_path_factory.mktemp("data"),
        # The whole session shares one client address; test_protection.py tests the limits.
        rate_limit="",
        stats_rate_limit="",
        # Tests read /stats right after writing rows; test_protection_ownership.py caches.
        stats_cache_seconds=0,
        # Judge jobs run when a test runs them (tests/test_jobs.py runs the threads).
        job_worker_threads=0,
    )


@pytest.fixture(scope="session")
def assistant(settings):
    from assistant.rag import build_assistant

    return build_assistant(settings)


@pytest.fixture(scope="session")
def database(database_url, settings) -> Database:
    db = Database(database_url, settings.migrations_dir)
    db.migrate()
    yield db
    db.close()


@pytest.fixture(scope="session")
def app(settings, assistant, database):
    from assistant.app import create_app

    return create_app(
        replace(settings, database_url=database.url), assistant=assistant, database=database
    )


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_client(settings, assistant, database):
    """A test client of an app built with some settings changed, on the shared database."""
    from assistant.app import create_app

    def make(**overrides):
        app = create_app(
            replace(settings, database_url=database.url, **overrides),
            assistant=assistant,
            database=database,
        )
        return app.test_client()

    return make


@pytest.fixture
def repo_data() -> Path:
    return PROJECT_ROOT / "data"


def sse_events(raw: str) -> list[tuple[str, dict]]:
    """The (event, JSON data) pairs of a text/event-stream body, parsed as the client does."""
    from assistant.client import sse_events as parse

    return [(event, json.loads(data)) for event, data in parse(iter(raw.splitlines()))]


class Served(NamedTuple):
    url: str
    database_url: str


@contextmanager
def started(command: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    """Run `command` until the block ends; wait until `ready_url` answers 200 first."""
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"{' '.join(command)} exited: {log.read_text()[-3000:]}")
            try:
                if requests.get(ready_url, timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{ready_url} did not answer within 90 s: {log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_api(
    server_url: str, directory: Path, *arguments: str, **environment: str
) -> Iterator[Served]:
    """`python -m assistant serve [arguments]` on a free port, the demo KB, no LLM and a new
    database of its own on `server_url`'s PostgreSQL, so row counts are exact. The UIs only
    talk HTTP: the embedded server is enough to drive them, and test_api/test_db cover both
    servers."""
    name, database_url = _scratch_database(server_url)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KB_PATH": "demo",
        "LLM_PROVIDER": "extractive",
        "PORT": str(port),
        "DATA_DIR": str(directory),
        "WEB_CONCURRENCY": "1",
        **environment,
    }
    env.pop("OPENAI_API_KEY", None)
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "assistant", "serve", *arguments]
    try:
        with started(command, env, f"{base}/health", directory / "api.log"):
            yield Served(base, database_url)
    finally:
        _drop_scratch(server_url, name)
