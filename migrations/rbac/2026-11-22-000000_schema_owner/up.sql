-- The schema itself is created by the migration runner (it must exist before diesel's
-- migration table, which lives in it). This records who owns it.
COMMENT ON SCHEMA rbac IS 'Owned by queue-rbac: roles, permissions, grants at global, tenant and ticket scope, checks and grant history. No other service reads or writes it.';
