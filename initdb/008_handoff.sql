-- 008: delivery of handed-off conversations to the team's helpdesk (HANDOFF_WEBHOOK_URL).
-- Additive only: new nullable or defaulted columns and an index; nothing is dropped.
-- (005 is left to the ownership migration of another branch.)

-- NULL: not sent to a helpdesk (no handoff, or no webhook configured when it happened);
-- 'queued' until it is accepted ('delivered'), or until its retries are used up ('failed').
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS handoff_delivery TEXT;
-- Posts made, the receiver's last HTTP status (NULL: no answer) and, on failure, the error's
-- class, never its text: an error can carry the webhook's URL and its token.
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS handoff_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS handoff_http_status INTEGER;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS handoff_error TEXT;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS handoff_delivered_at TIMESTAMPTZ;

-- `assistant gaps` and the outcome metrics look handoffs and declines up by this.
CREATE INDEX IF NOT EXISTS conversations_status_idx ON conversations (status, timestamp);

INSERT INTO schema_migrations (version) VALUES ('008') ON CONFLICT (version) DO NOTHING;
