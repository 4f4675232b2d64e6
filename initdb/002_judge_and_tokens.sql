-- 002: who judged a conversation's relevance, and whether token counts are estimates.
-- Additive only: new nullable or defaulted columns and an index; nothing is dropped.

-- 'llm' when a judge model gave the verdict, 'heuristic' when retrieval confidence and status
-- did; NULL while the row is still PENDING.
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS relevance_source TEXT;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS judge_model TEXT;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS judged_at TIMESTAMPTZ;
-- TRUE when the server reported no usage and the counts were estimated locally.
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS tokens_estimated BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE conversations
    ADD COLUMN IF NOT EXISTS eval_tokens_estimated BOOLEAN NOT NULL DEFAULT FALSE;

-- `assistant judge --pending` and the worker look rows up by this; it stays small because
-- judged rows leave it.
CREATE INDEX IF NOT EXISTS conversations_pending_idx
    ON conversations (timestamp) WHERE relevance = 'PENDING';

INSERT INTO schema_migrations (version) VALUES ('002') ON CONFLICT (version) DO NOTHING;
