-- Issue 19, item 3: what is done at Queue to Raptor's users' grants is written back to Raptor
-- (docs/rbac-service.md, "Write-back to Raptor"), so a rollback locks nobody out.
--
-- rbac knows principals by Queue user id; which of them came from Raptor (and as which customer)
-- it learns at import: `queuectl legacy import` sends every imported user's pair to
-- `POST /internal/v1/import/principals` (one audited event per batch of new pairs).
CREATE TABLE rbac.legacy_principals (
  principal_id text        PRIMARY KEY,
  legacy_id    text        NOT NULL UNIQUE,
  linked_at    timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT ON rbac.legacy_principals TO queue_rbac_app;

-- The write-back outbox (queue_platform::writeback::WRITEBACK_DDL, the relay auth uses too): one
-- row per change to send to Raptor's internal API (`/internal/queue/v1/grants...`), written in the
-- very transaction of the change it reflects, sent oldest first (one grant's rows in order, keyed
-- `grant:<uuid>`: its create before its revoke), retried with backoff; a permanent refusal (a 4xx
-- other than 408/429) marks the row failed and it stays, visible in `GET /internal/v1/import/status`
-- (`write_back`). Nothing is deleted. Kinds: `grant.create`, `grant.revoke`.
CREATE TABLE rbac.legacy_writeback (
  id              bigserial   PRIMARY KEY,
  created_at      timestamptz NOT NULL DEFAULT now(),
  kind            text        NOT NULL,
  method          text        NOT NULL CHECK (method IN ('POST', 'PATCH', 'DELETE')),
  path            text        NOT NULL,
  body            jsonb,
  order_key       text        NOT NULL,
  coalesce_key    text,
  subject         uuid,
  on_delivered    text,
  attempts        integer     NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  delivered_at    timestamptz,
  superseded_by   bigint,
  failed_at       timestamptz,
  last_error      text,
  legacy_id       text
);
CREATE INDEX legacy_writeback_pending ON rbac.legacy_writeback (id) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX legacy_writeback_order ON rbac.legacy_writeback (order_key, id) WHERE delivered_at IS NULL AND failed_at IS NULL;
-- The grant a row is about, and the Raptor id a delivered create answered: the linker and the
-- import find a grant made at Queue by it.
CREATE INDEX legacy_writeback_subject ON rbac.legacy_writeback (subject);
CREATE INDEX legacy_writeback_legacy_id ON rbac.legacy_writeback (legacy_id) WHERE legacy_id IS NOT NULL;
GRANT SELECT, INSERT, UPDATE ON rbac.legacy_writeback TO queue_rbac_app;
GRANT USAGE ON SEQUENCE rbac.legacy_writeback_id_seq TO queue_rbac_app;

-- A grant made at Queue gets Raptor's row id once its create is delivered: rbac links it through
-- the pre-writer (an audit event first, like a role's link), so reconcile sees an audited change
-- and the next import recognises the grant.
GRANT UPDATE (legacy_id) ON rbac.rbac_grants TO queue_rbac_app;
