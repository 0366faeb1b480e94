-- The schema itself is created by the migration runner (it must exist before diesel's
-- migration table, which lives in it). This records who owns it.
COMMENT ON SCHEMA audit IS 'Owned by queue-audit: the tamper-evident audit log: per-tenant HMAC chains, KMS keys, checkpoints, verification and reads. No other service reads or writes it.';
