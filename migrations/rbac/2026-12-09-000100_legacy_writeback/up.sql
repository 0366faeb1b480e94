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
GRANT INSERT ON rbac.legacy_principals TO queue_rbac_app;

-- The write-back outbox: one row per change to send to Raptor's internal API
-- (`/internal/queue/v1/...`), written in the very transaction of the change it reflects, sent
-- oldest first by the relay (one key's rows in order: a grant's create before its revoke),
-- retried with backoff; a permanent refusal (a 4xx other than 408/429) marks the row failed and
-- it stays, visible in `GET /internal/v1/import/status` (`write_back`). Nothing is deleted.
CREATE TABLE rbac.legacy_writeback (
  id              bigserial   PRIMARY KEY,
  -- `grant.create` or `grant.revoke`.
  kind            text        NOT NULL,
  -- The rows of one key are sent in order (`grant:<uuid>`).
  key             text        NOT NULL,
  -- The Queue record the row is about (the grant's id).
  record_id       uuid        NOT NULL,
  body            jsonb       NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  attempts        integer     NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  delivered_at    timestamptz,
  failed_at       timestamptz,
  last_error      text,
  CONSTRAINT legacy_writeback_kind CHECK (kind IN ('grant.create', 'grant.revoke'))
);
CREATE INDEX legacy_writeback_pending ON rbac.legacy_writeback (id)
  WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX legacy_writeback_key ON rbac.legacy_writeback (key);
GRANT SELECT, INSERT, UPDATE ON rbac.legacy_writeback TO queue_rbac_app;
GRANT USAGE ON SEQUENCE rbac.legacy_writeback_id_seq TO queue_rbac_app;

-- A grant made at Queue gets Raptor's row id once its create is delivered (through the
-- pre-writer, like a role's link), so the next import recognises it.
GRANT UPDATE (legacy_id) ON rbac.rbac_grants TO queue_rbac_app;
