ALTER TABLE rbac.rbac_audit_links DROP CONSTRAINT rbac_audit_links_pkey;
