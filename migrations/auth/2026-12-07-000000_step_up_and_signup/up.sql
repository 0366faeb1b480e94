-- Step-up (issue 16, item 5): when the session's user last proved presence with a passkey.
-- A login sets it; a re-authentication ceremony (kind 'reauth') refreshes it. Adding a passkey
-- or generating backup codes with a full session needs it to be recent.
ALTER TABLE auth.queue_sessions ADD COLUMN verified_at timestamptz;

ALTER TABLE auth.webauthn_ceremonies DROP CONSTRAINT webauthn_ceremonies_kind_check;
ALTER TABLE auth.webauthn_ceremonies ADD CONSTRAINT webauthn_ceremonies_kind_check
  CHECK (kind IN ('register', 'login', 'discoverable', 'decoy', 'reauth'));

-- Sign-up names no tenant (issue 16, item 4): a confirmed address finds its users by the
-- address alone.
CREATE INDEX users_email ON auth.users (email);
