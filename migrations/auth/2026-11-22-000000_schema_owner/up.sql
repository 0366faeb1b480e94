-- The schema itself is created by the migration runner (it must exist before diesel's
-- migration table, which lives in it). This records who owns it.
COMMENT ON SCHEMA auth IS 'Owned by queue-auth: users, passkeys, sessions v2, backup codes and email verification. No other service reads or writes it.';
