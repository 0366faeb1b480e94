-- Issue 20: a Merkle tree per tenant beside the HMAC chain (docs/audit-chain.md, "The Merkle
-- tree"). RFC 6962 hashing; leaf n is SHA-256(0x00 || canonical(event)) of the event with
-- seq = n + 1. The tree is kept as Go's sumdb/tlog keeps it: every "stored hash" (the hash of
-- each complete subtree, numbered by tlog's stored_hash_index), so proofs read O(log n) rows
-- and never rehash the chain. The integrator (crates/queue-audit/src/domain/merkle.rs) appends
-- them behind the chain; `merkle_trees` holds each tenant's integrated size and root.
CREATE TABLE audit.merkle_hashes (
  tenant_id text NOT NULL,
  idx       bigint NOT NULL CHECK (idx >= 0),
  hash      bytea NOT NULL CHECK (octet_length(hash) = 32),
  PRIMARY KEY (tenant_id, idx)
);

CREATE TABLE audit.merkle_trees (
  tenant_id  text PRIMARY KEY,
  size       bigint NOT NULL CHECK (size >= 0),
  root       bytea NOT NULL CHECK (octet_length(root) = 32),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Append-only for the service: hashes are never rewritten; a tree only grows.
GRANT SELECT, INSERT ON audit.merkle_hashes TO queue_audit_app;
GRANT SELECT, INSERT, UPDATE ON audit.merkle_trees TO queue_audit_app;

CREATE FUNCTION audit.merkle_tree_grows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.size < OLD.size OR NEW.tenant_id <> OLD.tenant_id THEN
    RAISE EXCEPTION 'a Merkle tree only grows (tenant %, size % -> %)', OLD.tenant_id, OLD.size, NEW.size;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER merkle_tree_grows BEFORE UPDATE ON audit.merkle_trees
  FOR EACH ROW EXECUTE FUNCTION audit.merkle_tree_grows();

ALTER TABLE audit.merkle_hashes ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.merkle_hashes FORCE ROW LEVEL SECURITY;
ALTER TABLE audit.merkle_trees ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.merkle_trees FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON audit.merkle_hashes
  USING (tenant_id = current_setting('queue.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('queue.tenant_id', true));
CREATE POLICY tenant_scope ON audit.merkle_trees
  USING (tenant_id = current_setting('queue.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('queue.tenant_id', true));
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit.merkle_hashes
  FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();

-- Item 3: each checkpoint is also a C2SP signed note over (origin, tree size = seq, Merkle root).
ALTER TABLE audit.checkpoints ADD COLUMN note text;
