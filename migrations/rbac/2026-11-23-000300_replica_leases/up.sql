-- Replica leases (docs/rbac-service.md, "Freshness"): each running replica renews a lease here
-- and records the highest revision it has applied. A change made through the service returns
-- only once every replica holding a live lease has applied it; a replica answers from memory
-- without reading the revision only while its own lease is live.
CREATE TABLE rbac.rbac_replicas (
  replica_id uuid PRIMARY KEY,
  applied_revision bigint NOT NULL,
  lease_until timestamptz NOT NULL,
  renewed_at timestamptz NOT NULL,
  started_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
GRANT SELECT, INSERT, UPDATE, DELETE ON rbac.rbac_replicas TO queue_rbac_app;
