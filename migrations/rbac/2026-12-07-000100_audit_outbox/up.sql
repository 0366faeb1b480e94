-- rbac's audit outbox (docs/rbac-service.md, "Nothing lost on a crash"): the compensating event
-- of every pre-written change is committed here *before* the change's audit event is written,
-- held back for `audit.compensate_after_secs`, and deleted in the very transaction that applies
-- the change. If the change never commits (it failed, or the process died), the row stays and
-- the relay (queue-audit-client's `OutboxRelay`, the one auth uses) delivers it; its id is the
-- audit event id, so a redelivery is recognised by the audit service and it lands once.
-- The columns are the ones the relay needs (`queue_audit_client::OUTBOX_DDL`).
CREATE TABLE rbac.rbac_audit_outbox (
  id              uuid        PRIMARY KEY,
  seq             bigserial   NOT NULL UNIQUE,
  event           jsonb       NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  attempts        integer     NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  delivered_at    timestamptz,
  audit_seq       bigint,
  audit_mac       text,
  failed_at       timestamptz,
  last_error      text
);
CREATE INDEX rbac_audit_outbox_pending ON rbac.rbac_audit_outbox (seq)
  WHERE delivered_at IS NULL AND failed_at IS NULL;
-- The service holds a compensation (INSERT), claims it when its change commits (DELETE), makes
-- it due when the change fails (UPDATE), and the relay reads and marks rows (SELECT, UPDATE).
GRANT SELECT, INSERT, UPDATE, DELETE ON rbac.rbac_audit_outbox TO queue_rbac_app;
GRANT USAGE ON SEQUENCE rbac.rbac_audit_outbox_seq_seq TO queue_rbac_app;
