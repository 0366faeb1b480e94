-- Issue 19: Raptor's identity data imported into auth (docs/legacy-import.md). Each imported row
-- keeps the id it had at Raptor (`legacy_id`, Raptor's bigserial as text) so that importing again
-- finds it (idempotence) and a later sync updates it; nothing here is more readable than at Raptor.

-- Raptor's customer id; a service looks a user up by it (GET /internal/v1/users?legacy_id=).
ALTER TABLE auth.users ADD COLUMN legacy_id text CHECK (legacy_id <> '');
CREATE UNIQUE INDEX users_legacy_id ON auth.users (legacy_id) WHERE legacy_id IS NOT NULL;
-- The WebAuthn user handle this user's passkeys carry when it is not the user id (Raptor gave each
-- customer 16 random bytes); a usernameless sign-in finds the user by it.
ALTER TABLE auth.users ADD COLUMN webauthn_user_handle bytea
  CHECK (length(webauthn_user_handle) BETWEEN 1 AND 64);
CREATE UNIQUE INDEX users_webauthn_user_handle ON auth.users (webauthn_user_handle)
  WHERE webauthn_user_handle IS NOT NULL;

-- Raptor's session id (its token arrives only as SHA-256, in token_hash like any session's).
ALTER TABLE auth.queue_sessions ADD COLUMN legacy_id text CHECK (legacy_id <> '');
CREATE UNIQUE INDEX queue_sessions_legacy_id ON auth.queue_sessions (legacy_id) WHERE legacy_id IS NOT NULL;

-- Raptor's webauthn_credentials id, and py_webauthn's fields as imported: the record of truth the
-- webauthn-rs Passkey in `passkey` was built from.
ALTER TABLE auth.passkeys ADD COLUMN legacy_id text CHECK (legacy_id <> '');
CREATE UNIQUE INDEX passkeys_legacy_id ON auth.passkeys (legacy_id) WHERE legacy_id IS NOT NULL;
ALTER TABLE auth.passkeys ADD COLUMN legacy_source jsonb;

-- Raptor's backup codes keep their werkzeug hash (`scrypt:…` or `pbkdf2:…`), verified at redeem;
-- a Queue code has its HMAC in code_hash instead. Exactly one of the two.
ALTER TABLE auth.queue_backup_codes ADD COLUMN legacy_id text CHECK (legacy_id <> '');
CREATE UNIQUE INDEX queue_backup_codes_legacy_id ON auth.queue_backup_codes (legacy_id)
  WHERE legacy_id IS NOT NULL;
ALTER TABLE auth.queue_backup_codes ADD COLUMN legacy_hash text;
ALTER TABLE auth.queue_backup_codes ALTER COLUMN code_hash DROP NOT NULL;
ALTER TABLE auth.queue_backup_codes ADD CONSTRAINT queue_backup_codes_one_hash
  CHECK ((code_hash IS NULL) <> (legacy_hash IS NULL));
