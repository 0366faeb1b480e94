-- Issue 19: roles and grants imported from Raptor keep Raptor's row id (a decimal string), so an
-- import sent again recognises what it brought before (`POST /internal/v1/import/{roles,grants}`).
-- Built-in roles are matched by name and carry none. Imported rows are written by the service
-- through its pre-write path like any other change (an audit event first, a link in the same
-- transaction), so the shadow tables see them as audited and reconcile does not report them.
ALTER TABLE rbac.rbac_roles ADD COLUMN legacy_id text;
ALTER TABLE rbac.rbac_roles ADD CONSTRAINT rbac_roles_legacy_id UNIQUE (legacy_id);
ALTER TABLE rbac.rbac_grants ADD COLUMN legacy_id text;
ALTER TABLE rbac.rbac_grants ADD CONSTRAINT rbac_grants_legacy_id UNIQUE (legacy_id);

-- A tenant's role defined at Queue before the import, with the same name and permissions as
-- Raptor's, is linked to it: the service may set that one column (nothing else of a role).
GRANT UPDATE (legacy_id) ON rbac.rbac_roles TO queue_rbac_app;
