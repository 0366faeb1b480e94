-- Issue 19: the write-back outbox (docs/legacy-import.md, "Write-back"). What a user imported from
-- Raptor changes at Queue (a passkey registered, used or deleted; an imported session revoked; an
-- imported backup code redeemed) is recorded here in the same transaction as the change, and the
-- relay (queue_platform::writeback, whose WRITEBACK_DDL these columns follow) sends it to Raptor's
-- /internal/queue/v1/ API so that a rollback locks nobody out.
CREATE TABLE auth.legacy_writeback (
  id              bigserial   PRIMARY KEY,
  created_at      timestamptz NOT NULL DEFAULT now(),
  kind            text        NOT NULL,   -- passkey.create, passkey.update, passkey.delete, session.revoke, backup_code.use
  method          text        NOT NULL CHECK (method IN ('POST', 'PATCH', 'DELETE')),
  path            text        NOT NULL,   -- under [legacy] writeback_url; may hold {legacy_id}
  body            jsonb,
  order_key       text        NOT NULL,   -- rows of one key go in order (passkey:<id>)
  coalesce_key    text,                   -- a newer pending row with this key supersedes this one
  subject         uuid,                   -- the Queue record on_delivered updates
  on_delivered    text,                   -- the name of the relay statement run with Raptor's id
  attempts        integer     NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  delivered_at    timestamptz,
  superseded_by   bigint,
  failed_at       timestamptz,
  last_error      text,
  legacy_id       text                    -- the id Raptor answered with
);
CREATE INDEX legacy_writeback_pending ON auth.legacy_writeback (id)
  WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX legacy_writeback_order ON auth.legacy_writeback (order_key, id)
  WHERE delivered_at IS NULL AND failed_at IS NULL;

GRANT SELECT, INSERT, UPDATE ON auth.legacy_writeback TO queue_auth_app;
GRANT USAGE ON SEQUENCE auth.legacy_writeback_id_seq TO queue_auth_app;
