REVOKE UPDATE (legacy_id) ON rbac.rbac_grants FROM queue_rbac_app;
DROP TABLE rbac.legacy_writeback;
DROP TABLE rbac.legacy_principals;
