"""A durable local spool for conversation and feedback rows written while PostgreSQL is away.

Each process appends JSON lines to its own file under `<data_dir>/spool/`; every line is
flushed and fsync'd before the reply leaves, so an answered question survives a crash. A
replay inserts the lines idempotently (conversations by id, feedback as an upsert after its
conversation) and then removes from the files only the bytes it replayed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from assistant.db import Database, DatabaseUnavailable

log = logging.getLogger(__name__)

UNAVAILABLE = (DatabaseUnavailable, psycopg.OperationalError)
# Seconds between replay attempts while spooled rows wait for the database.
RETRY_SECONDS = 1.0
# The advisory lock key that serialises replays across workers and replicas.
REPLAY_LOCK = 7_224_302


@dataclass(frozen=True)
class _Snapshot:
    path: Path
    inode: int
    data: bytes


class SpoolUnavailable(RuntimeError):
    """The spool could not write a record (disk full, read-only, gone): it is not kept."""


class Spool:
    """Rows and votes kept on local disk while PostgreSQL is away, one JSON line each.

    `failing` names the error of the last write when it failed (None once one succeeds):
    /health reports it, since nothing can be kept while both the database and the spool fail.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._pid: int | None = None
        self.failing: str | None = None
        # path -> (inode, bytes counted, lines in them): `pending` reads only what is new.
        self._counted: dict[Path, tuple[int, int, int]] = {}

    @property
    def path(self) -> Path:
        # One file per process: a forked gunicorn worker must not share its parent's file name.
        if self._path is None or self._pid != os.getpid():
            self._path = self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._pid = os.getpid()
        return self._path

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl")) if self.directory.is_dir() else []

    def add_conversation(self, row: dict[str, Any]) -> None:
        self._append({"kind": "conversation", "row": {**row, "timestamp": _now()}})

    def add_feedback(
        self, conversation_id: str, feedback: int, comment: str | None, owner: str | None = None
    ) -> None:
        """Keep a vote; `owner` (the voter's key fingerprint) is checked when it is replayed."""
        self._append(
            {
                "kind": "feedback",
                "conversation_id": conversation_id,
                "feedback": feedback,
                "comment": comment,
                "given_at": _now(),
                "owner": owner,
            }
        )

    def _append(self, record: dict[str, Any]) -> None:
        """Append one record, fsynced; raises SpoolUnavailable when it cannot be written."""
        line = json.dumps(record, ensure_ascii=False, default=str).encode() + b"\n"
        try:
            self._write(line)
        except OSError as exc:
            self.failing = type(exc).__name__
            raise SpoolUnavailable(f"the spool cannot write: {self.failing}") from exc
        self.failing = None

    def _write(self, line: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            while True:
                with open(self.path, "ab") as handle, _locked(handle):
                    # A replay may have replaced the file while we waited for the lock.
                    if not _same_file(handle, self.path):
                        continue
                    if handle.tell() > 0 and not _ends_with_newline(self.path):
                        # A crash tore the last line: end it, so it cannot swallow this one.
                        handle.write(b"\n")
                    handle.write(line)
                    handle.flush()
                    os.fsync(handle.fileno())
                    return

    def entries(self) -> list[dict[str, Any]]:
        return [entry for snapshot in self._snapshots() for entry in _parse(snapshot.data)]

    def pending(self) -> int:
        """Records waiting, counted as lines. Each file's count is kept and only bytes added
        since are read, so /health stays fast however much an outage spooled (a file that was
        replayed or rewritten is counted again)."""
        total = 0
        counted: dict[Path, tuple[int, int, int]] = {}
        for path in self.files():
            try:
                stat = path.stat()
                inode, size, lines = self._counted.get(path, (stat.st_ino, 0, 0))
                if inode != stat.st_ino or stat.st_size < size:
                    inode, size, lines = stat.st_ino, 0, 0
                if stat.st_size > size:
                    with open(path, "rb") as handle:
                        handle.seek(size)
                        data = handle.read(stat.st_size - size)
                    lines += data.count(b"\n")
                    size += len(data)
            except FileNotFoundError:
                continue
            counted[path] = (inode, size, lines)
            total += lines
        self._counted = counted
        return total

    def has_conversation(self, conversation_id: str, owner: str | None = None) -> bool:
        """Whether a spooled conversation has this id (and, with keys on, this owner)."""
        return any(
            entry["kind"] == "conversation"
            and entry["row"].get("id") == conversation_id
            and (owner is None or entry["row"].get("owner") == owner)
            for entry in self.entries()
        )

    def replay(self, database: Database) -> int:
        """Insert every spooled row, then drop exactly the bytes replayed; returns rows sent.

        One replay at a time across the workers and replicas sharing the database (an
        advisory lock; the others skip their turn), conversations inserted in batches.
        Conversations of every file go first, so a vote spooled by one process finds the
        conversation another process spooled.
        """
        with database.exclusive(REPLAY_LOCK) as mine:
            return self._replay(database) if mine else 0

    def _replay(self, database: Database) -> int:
        snapshots = self._snapshots()
        entries = [entry for snapshot in snapshots for entry in _parse(snapshot.data)]
        database.save_conversations(
            [entry["row"] for entry in entries if entry["kind"] == "conversation"]
        )
        for entry in entries:
            if entry["kind"] == "feedback" and not database.save_feedback(
                entry["conversation_id"],
                entry["feedback"],
                entry["comment"],
                datetime.fromisoformat(entry["given_at"]),
                entry.get("owner"),
            ):
                log.warning("dropped spooled feedback on an unknown conversation")
        for snapshot in snapshots:
            self._consume(snapshot)
        if entries:
            log.info("replayed %d spooled rows", len(entries))
        return len(entries)

    def discard(self, doomed: Callable[[dict[str, Any]], bool]) -> int:
        """Remove every record `doomed` picks (a conversation or feedback entry, as spooled)
        from every file, under the lock writers and replays take; returns how many. A writer
        waiting for the lock finds the file replaced and writes to the new one; a line torn by
        a crash is kept, since what it held cannot be told."""
        removed = 0
        for path in self.files():
            try:
                with open(path, "rb") as handle, _locked(handle):
                    lines = handle.read().splitlines(keepends=True)
                    kept = [line for line in lines if not _picked(line, doomed)]
                    removed += len(lines) - len(kept)
                    if len(kept) < len(lines):
                        _rewrite(path, b"".join(kept))
            except FileNotFoundError:
                continue
        return removed

    def _snapshots(self) -> list[_Snapshot]:
        found = []
        for path in self.files():
            try:
                with open(path, "rb") as handle, _locked(handle):
                    found.append(_Snapshot(path, os.fstat(handle.fileno()).st_ino, handle.read()))
            except FileNotFoundError:
                continue
        return found

    def _consume(self, snapshot: _Snapshot) -> None:
        """Remove the replayed prefix; lines appended since the snapshot stay."""
        try:
            with open(snapshot.path, "rb") as handle, _locked(handle):
                data = handle.read()
                unchanged = os.fstat(handle.fileno()).st_ino == snapshot.inode
                if not unchanged or not data.startswith(snapshot.data):
                    return  # another process replayed and rewrote it meanwhile
                _rewrite(snapshot.path, data[len(snapshot.data) :])
        except FileNotFoundError:
            return


class Flusher:
    """Replays the spool every `interval` seconds from a daemon thread of its own process.

    Started lazily from a request, so each gunicorn worker gets its own thread after the fork.
    """

    def __init__(self, spool: Spool, database: Database, interval: float):
        self.spool, self.database, self.interval = spool, database, interval
        self._pid: int | None = None
        self._start_lock = threading.Lock()
        self._stop = threading.Event()

    def ensure_running(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="spool-flusher", daemon=True).start()

    def stop(self) -> None:
        """End the thread before its database is closed, or it would reopen the pool."""
        self._stop.set()

    def flush(self) -> int:
        """One replay attempt; 0 when the database is still away."""
        if not self.spool.files():
            return 0
        if not self.database.ping():
            return 0
        try:
            return self.spool.replay(self.database)
        except UNAVAILABLE as exc:
            # The type only: a connection error's text can carry the host and user.
            log.warning("spool replay postponed: %s", type(exc).__name__)
            return 0

    def _run(self) -> None:
        # At once, then every interval: rows an earlier run spooled go first. While rows wait
        # for the database, every second: the drain starts as soon as it is back.
        while not self._stop.is_set():
            try:
                self.flush()
            except Exception:
                log.exception("spool replay failed")
            waiting = self.spool.pending() > 0
            self._stop.wait(min(self.interval, RETRY_SECONDS) if waiting else self.interval)


def _now() -> str:
    return datetime.now(UTC).isoformat()


@contextmanager
def _locked(handle) -> Iterator[None]:
    # flock is per open file, so it orders writers and replays across processes and threads.
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _same_file(handle, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _rewrite(path: Path, rest: bytes) -> None:
    """Replace `path` (its lock held by the caller) by `rest`, or remove it when empty."""
    if not rest:
        path.unlink()
        return
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as out:
        out.write(rest)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def _entry(line: bytes) -> dict[str, Any] | None:
    """One spooled record, or None for a line torn by a crash mid-write (its reply never
    left, so nothing is lost) or one of no kind the spool writes."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if isinstance(entry, dict) and entry.get("kind") in ("conversation", "feedback"):
        return entry
    return None


def _picked(line: bytes, doomed: Callable[[dict[str, Any]], bool]) -> bool:
    entry = _entry(line)
    return entry is not None and doomed(entry)


def _parse(data: bytes) -> Iterator[dict[str, Any]]:
    for line in data.splitlines():
        entry = _entry(line)
        if entry is None:
            log.warning("skipped a torn spool line")
            continue
        yield entry
