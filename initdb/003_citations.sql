-- 003: which knowledge-base entries a generated answer cited, and answers that cited none.
-- Additive only: new defaulted columns; nothing is dropped or rewritten.

-- The source ids the answer cites as [1], [2], ... (the ids it was shown are in `sources`).
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS cited_sources JSONB NOT NULL DEFAULT '[]';
-- TRUE when a generated answer cites none of the entries it was given.
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS uncited BOOLEAN NOT NULL DEFAULT FALSE;

INSERT INTO schema_migrations (version) VALUES ('003') ON CONFLICT (version) DO NOTHING;
