-- 001: conversations and feedback.
-- Idempotent and additive: safe to run on every start and as a docker-entrypoint-initdb.d
-- script. Migrations only ever add: no table, column or row is ever removed.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS conversations (
    id                     TEXT PRIMARY KEY,
    session_id             TEXT,
    question               TEXT NOT NULL,
    answer                 TEXT NOT NULL,
    model_used             TEXT NOT NULL,
    provider               TEXT,
    intent                 TEXT,
    category               TEXT,
    confidence             DOUBLE PRECISION,
    status                 TEXT NOT NULL DEFAULT 'answered',
    handoff_reason         TEXT,
    fallback               BOOLEAN NOT NULL DEFAULT FALSE,
    error                  TEXT,
    sources                JSONB NOT NULL DEFAULT '[]'::jsonb,
    response_time          DOUBLE PRECISION NOT NULL,
    relevance              TEXT NOT NULL DEFAULT 'PENDING',
    relevance_explanation  TEXT NOT NULL DEFAULT '',
    prompt_tokens          INTEGER NOT NULL DEFAULT 0,
    completion_tokens      INTEGER NOT NULL DEFAULT 0,
    total_tokens           INTEGER NOT NULL DEFAULT 0,
    eval_prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    eval_completion_tokens INTEGER NOT NULL DEFAULT 0,
    eval_total_tokens      INTEGER NOT NULL DEFAULT 0,
    cost_usd               DOUBLE PRECISION NOT NULL DEFAULT 0,
    timestamp              TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS conversations_timestamp_idx ON conversations (timestamp);
CREATE INDEX IF NOT EXISTS conversations_session_idx ON conversations (session_id, timestamp);

-- One row per conversation: a customer who changes their mind replaces the earlier vote.
CREATE TABLE IF NOT EXISTS feedback (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations (id),
    feedback        SMALLINT NOT NULL CHECK (feedback IN (-1, 1)),
    comment         TEXT,
    timestamp       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS feedback_timestamp_idx ON feedback (timestamp);

INSERT INTO schema_migrations (version) VALUES ('001') ON CONFLICT (version) DO NOTHING;
