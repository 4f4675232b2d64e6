-- 005: whose a conversation is. With API keys configured, a conversation, its feedback and its
-- session belong to the key that created them: another key gets 404.
-- Additive only: a new nullable column and an index; nothing is dropped or rewritten.

-- The SHA-256 (hex) of the API key that asked, never the key itself; NULL for rows stored
-- while keys were off (no key can read those once keys are on).
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS owner TEXT;

-- A session's history is looked up by its owner and id: two keys may use the same session id.
CREATE INDEX IF NOT EXISTS conversations_owner_session_idx
    ON conversations (owner, session_id, timestamp);

INSERT INTO schema_migrations (version) VALUES ('005') ON CONFLICT (version) DO NOTHING;
