"""Background jobs kept in PostgreSQL: the relevance judgement of each stored answer, and the
delivery of each handed-off conversation to the team's helpdesk (assistant/handoff.py).

Saving a conversation inserts its `judge` job, and a `handoff` job when it was handed off with
HANDOFF_WEBHOOK_URL set (or gave a contact after a handoff), in the same transaction
(db.save_conversations),
so a job exists exactly when its row does, a restart or `kill -9` loses none, and a spooled
answer gets its job when the spool is replayed. A `JobRunner` claims jobs one at a time with
`FOR UPDATE SKIP LOCKED`, so any number of runners (threads of the web processes,
`assistant worker` processes, on any replica) share the queue without taking a job twice. A
job that fails is retried with exponential backoff, then marked `failed`; one whose runner died
mid-job is taken over once its lease runs out. Judging writes a verdict only on a PENDING row
(db.save_judgement), so a job run twice still judges its conversation once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from assistant.handoff import HANDOFF_MAX_ATTEMPTS
from assistant.judge import Judge, sources_text
from assistant.spool import UNAVAILABLE

if TYPE_CHECKING:
    from assistant.db import Database
    from assistant.handoff import HandoffWebhook

log = logging.getLogger(__name__)

# Seconds before the first retry of a failed job; each later one waits twice as long.
RETRY_BACKOFF = 5.0
MAX_BACKOFF = 600.0


class JobRunner:
    """Runs the jobs table's work: `start(threads)` in daemon threads of this process (the
    web process's JOB_WORKER_THREADS), or `run_forever` in the foreground (`assistant
    worker`). `lease` is how long a running job may go unfinished before another runner takes
    it over (seconds; longer than any one job: a judgement is bounded by LLM_DEADLINE).
    `handoff`: the helpdesk webhook that `handoff` jobs post to; without one they wait.
    `retry_backoff`: seconds before a failed job's first retry; each later one waits twice
    as long, at most MAX_BACKOFF."""

    def __init__(
        self,
        database: Database,
        judge: Judge,
        *,
        handoff: HandoffWebhook | None = None,
        lease: float = 300.0,
        max_attempts: int = 5,
        poll_interval: float = 1.0,
        retry_backoff: float = RETRY_BACKOFF,
    ):
        self.database, self.judge, self.handoff = database, judge, handoff
        self.lease, self.max_attempts, self.poll_interval = lease, max_attempts, poll_interval
        self.retry_backoff = retry_backoff
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._handlers: dict[str, Callable[[str], None]] = {"judge": self._judge}
        # Called with a job's key once its last attempt has failed.
        self._give_up: dict[str, Callable[[str], None]] = {}
        self._attempts = {"judge": max_attempts}
        if handoff is not None:
            self._handlers["handoff"] = handoff.deliver
            self._give_up["handoff"] = handoff.give_up
            self._attempts["handoff"] = HANDOFF_MAX_ATTEMPTS
        self._stop = threading.Event()
        self._pid: int | None = None
        self._lock = threading.Lock()

    def start(self, threads: int) -> None:
        """Start `threads` daemon threads in this process, once per process (a server's
        forked workers each start their own)."""
        with self._lock:
            if threads < 1 or self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
            for number in range(threads):
                threading.Thread(
                    target=self.run_forever, name=f"jobs-{number}", daemon=True
                ).start()

    def stop(self) -> None:
        self._stop.set()

    def run_forever(self) -> None:
        """Claim and run jobs until `stop`; idle, poll every `poll_interval` seconds."""
        down = False
        while not self._stop.is_set():
            try:
                ran = self.run_once()
                down = False
            except UNAVAILABLE as exc:
                if not down:  # once an outage, not every poll
                    log.warning("jobs wait: database unavailable (%s)", type(exc).__name__)
                down, ran = True, False
            except Exception:
                log.exception("jobs: claiming failed")
                ran = False
            if not ran:
                self._stop.wait(self.poll_interval)

    def run_until_idle(self, timeout: float) -> int:
        """Run ready jobs in this thread until none is left or `timeout` seconds pass;
        returns how many ran. For commands that exit right after (`assistant ask`) and tests."""
        ran, deadline = 0, time.monotonic() + timeout
        while time.monotonic() < deadline and self.run_once():
            ran += 1
        return ran

    def run_once(self) -> bool:
        """Claim one ready job of a kind this runner runs, and run it; False when none is
        ready."""
        job = self.database.claim_job(self.name, self.lease, tuple(self._handlers))
        if job is None:
            return False
        try:
            self._handlers[job["kind"]](job["key"])
        except Exception as exc:
            # Only the class: an error's text can carry hosts and URLs.
            error = type(exc).__name__
            delay = None
            if job["attempts"] < self._attempts.get(job["kind"], self.max_attempts):
                delay = min(MAX_BACKOFF, self.retry_backoff * 2 ** (job["attempts"] - 1))
            log.warning(
                "job %s %s failed (%s): %s", job["kind"], job["key"], error,
                f"retried in {delay:.0f} s" if delay is not None else "given up",
            )  # fmt: skip
            self.database.retry_job(job["id"], self.name, error, delay)
            if delay is None and job["kind"] in self._give_up:
                self._give_up[job["kind"]](job["key"])
        else:
            self.database.finish_job(job["id"], self.name)
        return True

    def _judge(self, conversation_id: str) -> None:
        row: dict[str, Any] | None = self.database.get_conversation(conversation_id)
        if row is None or row["relevance"] != "PENDING":
            return  # judged already (by `assistant judge --pending`, or an earlier run)
        self.judge.judge_row(
            self.database,
            conversation_id,
            row["question"],
            row["answer"],
            sources_text(row["sources"] or []),
            row["status"],
            row["confidence"],
        )
