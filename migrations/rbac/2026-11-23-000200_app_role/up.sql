-- The service works as queue_rbac_app (SET ROLE per pooled connection), not as the schema
-- owner: it may read everything, add roles, grants and audit links, and on a grant change only
-- the columns that revoking and recording an expiry set. It may not delete anything or rewrite
-- who was granted what. (Roles are cluster-wide: tolerate another database's migration creating
-- it at the same moment.)
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'queue_rbac_app') THEN
    BEGIN
      CREATE ROLE queue_rbac_app NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;
    END;
  END IF;
END
$$;
GRANT queue_rbac_app TO CURRENT_USER;
GRANT USAGE ON SCHEMA rbac TO queue_rbac_app;
GRANT SELECT ON ALL TABLES IN SCHEMA rbac TO queue_rbac_app;
GRANT INSERT ON rbac.rbac_grants, rbac.rbac_roles, rbac.rbac_role_permissions, rbac.rbac_audit_links
  TO queue_rbac_app;
GRANT UPDATE (revoked_at, revoked_by, revoke_reason, revoke_event_id, expiry_recorded_at)
  ON rbac.rbac_grants TO queue_rbac_app;
-- The change log and the counter are written by the trigger, as the owner.
ALTER FUNCTION rbac.note_change() SECURITY DEFINER SET search_path = pg_catalog;
