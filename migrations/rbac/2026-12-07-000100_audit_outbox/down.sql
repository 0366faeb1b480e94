DROP TABLE rbac.rbac_audit_outbox;
