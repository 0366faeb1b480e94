REVOKE UPDATE (legacy_id) ON rbac.rbac_roles FROM queue_rbac_app;
ALTER TABLE rbac.rbac_grants DROP COLUMN legacy_id;
ALTER TABLE rbac.rbac_roles DROP COLUMN legacy_id;
