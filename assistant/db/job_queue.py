"""The job queue in PostgreSQL (judge and handoff jobs), and advisory locks across processes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from assistant.db.connection import Connections


class JobQueue(Connections):
    """The `jobs` table: `claim_job`, `finish_job`, `retry_job`, `job_counts`; and
    `exclusive`, an advisory lock held for a block."""

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
