-- 006: a record of every retention purge and erasure request (`assistant db purge`,
-- `assistant db forget`): when, what and how many rows, and never what was deleted.
-- Additive only: a new table. (005 is left to the ownership migration of the same issue.)

CREATE TABLE IF NOT EXISTS erasures (
    id            BIGSERIAL PRIMARY KEY,
    performed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- 'purge': everything older than `cutoff`; 'forget': one session, on its customer's request.
    action        TEXT NOT NULL CHECK (action IN ('purge', 'forget')),
    -- The purge's cutoff. A forgotten session is not named, not even by a hash: a session id
    -- a client chose may be guessable, and the record would then still point at the person.
    cutoff        TIMESTAMPTZ,
    conversations INTEGER NOT NULL,
    feedback      INTEGER NOT NULL,
    jobs          INTEGER NOT NULL,
    -- Records removed from this host's spool (rows not yet written to PostgreSQL).
    spooled       INTEGER NOT NULL
);

INSERT INTO schema_migrations (version) VALUES ('006') ON CONFLICT (version) DO NOTHING;
