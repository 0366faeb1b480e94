DROP TABLE IF EXISTS rbac.rbac_audit_links, rbac.rbac_changes, rbac.rbac_revision,
  rbac.rbac_grants_shadow, rbac.rbac_role_permissions_shadow, rbac.rbac_roles_shadow,
  rbac.rbac_grants, rbac.rbac_role_permissions, rbac.rbac_roles, rbac.rbac_permissions;
DROP FUNCTION IF EXISTS rbac.note_change();
