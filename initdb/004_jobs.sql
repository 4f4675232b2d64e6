-- 004: background jobs (relevance judgements) as rows, claimed by `assistant worker` or the web
-- process's own job threads with FOR UPDATE SKIP LOCKED. Additive only: a new table.

CREATE TABLE IF NOT EXISTS jobs (
    id           BIGSERIAL PRIMARY KEY,
    -- What to do ('judge'), and to what (a conversation id): one job per pair.
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    -- queued -> running -> done, or back to queued (retried after run_after), or failed.
    status       TEXT NOT NULL DEFAULT 'queued',
    attempts     INTEGER NOT NULL DEFAULT 0,
    run_after    TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_by    TEXT,
    locked_at    TIMESTAMPTZ,
    last_error   TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    UNIQUE (kind, key)
);

-- Workers look for the next ready job by this; it holds only what waits or runs.
CREATE INDEX IF NOT EXISTS jobs_waiting_idx ON jobs (run_after, id)
    WHERE status IN ('queued', 'running');

INSERT INTO schema_migrations (version) VALUES ('004') ON CONFLICT (version) DO NOTHING;
