"""The embedded PostgreSQL (pgserver) that serves when no DATABASE_URL is set: started once
per folder and process, restarted when its postmaster dies, stopped as `assistant serve`
exits."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

_embedded_servers: dict[Path, Any] = {}


def load_pgserver() -> Any:
    """The pgserver module, imported quietly. Imported on demand: heavy, and only needed
    without a configured database. Its class body asks platformdirs for XDG_RUNTIME_DIR,
    unset outside a desktop session, and the fallback in /tmp it warns about is fine for a
    lock file."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import pgserver
    return pgserver


def embedded_url(pgdata: Path) -> str:
    """Start (or join) the embedded PostgreSQL in `pgdata` and return its URL.

    The server object is kept for the life of the process: pgserver stops the cluster when the
    last process holding it exits.
    """
    pgserver = load_pgserver()
    pgdata = pgdata.resolve()
    if pgdata not in _embedded_servers:
        pgdata.mkdir(parents=True, exist_ok=True)
        _embedded_servers[pgdata] = pgserver.get_server(pgdata, cleanup_mode="stop")
    return _embedded_servers[pgdata].get_uri()


def embedded_folder(url: str) -> Path | None:
    """The folder of the embedded cluster at `url` that this process (or the process it was
    forked from) started; None for any other database."""
    return next((p for p, server in _embedded_servers.items() if server.get_uri() == url), None)


def restart_embedded(pgdata: Path) -> None:
    """Start the embedded cluster in `pgdata` again if its postmaster is gone (killed or
    crashed); nothing if it runs. pgserver keeps one server object per folder, so
    `get_server` would return the same object and start nothing; `ensure_postgres_running`
    starts a postmaster that is gone, and under pgserver's lock across processes the workers
    that notice together start it once. Raises subprocess.SubprocessError when pg_ctl fails
    (backends of a killed postmaster hold its shared memory for a moment), AssertionError
    when the cluster is not ready after it."""
    server = _embedded_servers[pgdata]
    with server._lock:
        server.ensure_postgres_running()


def stop_embedded() -> None:
    """Stop the embedded clusters this process started, as it exits (`assistant serve`'s
    master). pgserver's own exit handler cannot under gevent: its subprocess forks, and no
    fork is allowed at interpreter shutdown. A cluster a worker started again (Database.ping)
    is adopted first, so the running postmaster is stopped, not the dead one."""
    from pgserver.utils import PostmasterInfo

    for pgdata, server in _embedded_servers.items():
        with server._lock:
            running = PostmasterInfo.read_from_pgdata(pgdata)
            if running is not None and running.is_running():
                server.ensure_postgres_running()
        server.cleanup()
