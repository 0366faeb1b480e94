-- The audit log: events chained per tenant, chain heads, data keys by epoch, signed checkpoints.
-- docs/audit-chain.md defines the chain; docs/audit-service.md the roles and row-level security.

-- The role the service works as (SET ROLE after connecting): it may read and append events and
-- nothing else. Roles are cluster-wide, so create it only once.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'queue_audit_app') THEN
    CREATE ROLE queue_audit_app NOLOGIN NOSUPERUSER NOINHERIT NOCREATEDB NOCREATEROLE NOBYPASSRLS;
  END IF;
END
$$;
GRANT queue_audit_app TO CURRENT_USER;
GRANT USAGE ON SCHEMA audit TO queue_audit_app;

-- Data keys, one per epoch, stored encrypted under the key provider (KMS or a local key).
CREATE TABLE audit.keys (
  epoch          integer     PRIMARY KEY CHECK (epoch > 0),
  provider       text        NOT NULL CHECK (provider IN ('local', 'aws-kms')),
  key_ref        text        NOT NULL,   -- the KMS key (id/ARN/alias) or local master key id that wraps it
  encrypted_key  bytea       NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  retired_at     timestamptz
);

CREATE TABLE audit.customer_audit_events (
  tenant_id      text        NOT NULL,
  seq            bigint      NOT NULL CHECK (seq > 0),
  event_id       uuid        NOT NULL,
  actor_type     text        NOT NULL,
  actor_id       text        NOT NULL,
  action         text        NOT NULL,
  target_type    text        NOT NULL,
  target_id      text        NOT NULL,
  occurred_at    timestamptz NOT NULL,
  recorded_at    timestamptz NOT NULL,
  ip             text,
  user_agent     text,
  trace_id       text,
  -- The payload exactly as it was MACed (canonical JSON text); `payload` is derived from it for
  -- queries and cannot be written on its own.
  payload_canonical text     NOT NULL,
  payload        jsonb       GENERATED ALWAYS AS (payload_canonical::jsonb) STORED,
  -- SHA-256 of the request's content, to tell a retry (same content) from a conflict.
  request_digest bytea       NOT NULL,
  prev_mac       bytea       NOT NULL,
  mac            bytea       NOT NULL,
  key_id         integer     NOT NULL,
  PRIMARY KEY (tenant_id, seq)
);
-- Event ids are unique per tenant: a retry is recognised by (tenant, id).
CREATE UNIQUE INDEX customer_audit_events_event_id ON audit.customer_audit_events (tenant_id, event_id);
CREATE INDEX customer_audit_events_action ON audit.customer_audit_events (tenant_id, action, seq);
CREATE INDEX customer_audit_events_occurred ON audit.customer_audit_events (tenant_id, occurred_at);

CREATE TABLE audit.chain_heads (
  tenant_id  text        PRIMARY KEY,
  seq        bigint      NOT NULL,
  mac        bytea       NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit.checkpoints (
  tenant_id  text        NOT NULL,
  seq        bigint      NOT NULL,
  mac        bytea       NOT NULL,
  algorithm  text        NOT NULL,   -- ECDSA_SHA_256 (P-256, DER signature)
  key_ref    text        NOT NULL,   -- the signing key: a KMS key id, or local:<thumbprint>
  signature  bytea       NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, seq)
);

-- Append-only: no UPDATE, DELETE or TRUNCATE of events by anyone but a superuser (who can
-- also disable triggers; the chain, the checkpoints and pgaudit are the defence there).
CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE EXCEPTION 'audit events are append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END;
$fn$;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit.customer_audit_events
  FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON audit.customer_audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- What the service's role may do.
GRANT SELECT, INSERT ON audit.customer_audit_events TO queue_audit_app;
GRANT SELECT, INSERT ON audit.checkpoints TO queue_audit_app;
GRANT SELECT, INSERT, UPDATE ON audit.chain_heads TO queue_audit_app;
GRANT SELECT ON audit.keys TO queue_audit_app;

-- Row-level security: every read and write is scoped to the tenant set for the transaction
-- (SET LOCAL queue.tenant_id = ...). With none set, nothing is visible and nothing can be written.
ALTER TABLE audit.customer_audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.customer_audit_events FORCE ROW LEVEL SECURITY;
ALTER TABLE audit.chain_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.chain_heads FORCE ROW LEVEL SECURITY;
ALTER TABLE audit.checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON audit.customer_audit_events
  USING (tenant_id = current_setting('queue.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('queue.tenant_id', true));
CREATE POLICY tenant_scope ON audit.chain_heads
  USING (tenant_id = current_setting('queue.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('queue.tenant_id', true));
CREATE POLICY tenant_scope ON audit.checkpoints
  USING (tenant_id = current_setting('queue.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('queue.tenant_id', true));
