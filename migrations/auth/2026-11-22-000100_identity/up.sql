-- Users, sessions v2, passkeys and their ceremonies, email verification, mail intents, backup
-- codes, abuse counters and the audit outbox. docs/auth-service.md explains the choices.
-- Secrets are never stored: session tokens as SHA-256, codes and link tokens as HMAC-SHA-256
-- under the server pepper.

-- The role the service works as (SET ROLE after connecting). Roles are cluster-wide.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'queue_auth_app') THEN
    CREATE ROLE queue_auth_app NOLOGIN NOSUPERUSER NOINHERIT NOCREATEDB NOCREATEROLE NOBYPASSRLS;
  END IF;
END
$$;
GRANT queue_auth_app TO CURRENT_USER;
GRANT USAGE ON SCHEMA auth TO queue_auth_app;

CREATE TABLE auth.users (
  id                uuid        PRIMARY KEY,
  tenant_id         text        NOT NULL,
  email             text        NOT NULL CHECK (email = lower(email) AND email = btrim(email)),
  email_verified_at timestamptz,
  display_name      text,
  status            text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  created_at        timestamptz NOT NULL,
  updated_at        timestamptz NOT NULL,
  UNIQUE (tenant_id, email)
);

CREATE TABLE auth.queue_sessions (
  id                  uuid        PRIMARY KEY,
  token_hash          bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  user_id             uuid        NOT NULL REFERENCES auth.users (id),
  tenant_id           text        NOT NULL,
  kind                text        NOT NULL CHECK (kind IN ('full', 'enrollment', 'recovery')),
  created_at          timestamptz NOT NULL,
  last_seen_at        timestamptz NOT NULL,
  idle_expires_at     timestamptz NOT NULL,
  absolute_expires_at timestamptz NOT NULL,
  revoked_at          timestamptz,
  revoked_reason      text,
  ip                  text,
  user_agent          text,
  CHECK (idle_expires_at <= absolute_expires_at)
);
CREATE INDEX queue_sessions_user ON auth.queue_sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE auth.passkeys (
  id           uuid        PRIMARY KEY,
  user_id      uuid        NOT NULL REFERENCES auth.users (id),
  cred_id      bytea       NOT NULL UNIQUE,
  passkey      jsonb       NOT NULL,   -- webauthn-rs Passkey: public key, counter, flags
  sign_count   bigint      NOT NULL DEFAULT 0,
  name         text        NOT NULL,
  created_at   timestamptz NOT NULL,
  last_used_at timestamptz
);
CREATE INDEX passkeys_user ON auth.passkeys (user_id);

-- In-flight ceremonies, so any replica can finish what another started.
CREATE TABLE auth.webauthn_ceremonies (
  id         uuid        PRIMARY KEY,
  kind       text        NOT NULL CHECK (kind IN ('register', 'login', 'discoverable', 'decoy')),
  user_id    uuid        REFERENCES auth.users (id),
  session_id uuid,
  state      jsonb       NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE INDEX webauthn_ceremonies_expiry ON auth.webauthn_ceremonies (expires_at);

CREATE TABLE auth.email_verifications (
  id          uuid        PRIMARY KEY,
  tenant_id   text        NOT NULL,
  email       text        NOT NULL,
  code_hash   bytea       NOT NULL,
  link_hash   bytea       NOT NULL UNIQUE,
  attempts    integer     NOT NULL DEFAULT 0,
  created_at  timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL,
  consumed_at timestamptz,
  ip          text
);
CREATE INDEX email_verifications_address ON auth.email_verifications (tenant_id, email, created_at DESC);

-- One row per message the service means to send; the mail relay sends each once.
CREATE TABLE auth.mail_intents (
  id              uuid        PRIMARY KEY,
  recipient       text        NOT NULL,
  subject         text        NOT NULL,
  text_body       text        NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  attempts        integer     NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  claimed_until   timestamptz,
  sent_at         timestamptz,
  provider        text,
  provider_message_id text,
  failed_at       timestamptz,
  last_error      text
);
CREATE INDEX mail_intents_pending ON auth.mail_intents (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;

CREATE TABLE auth.queue_backup_codes (
  id         uuid        PRIMARY KEY,
  user_id    uuid        NOT NULL REFERENCES auth.users (id),
  set_id     uuid        NOT NULL,
  code_hash  bytea       NOT NULL,
  created_at timestamptz NOT NULL,
  used_at    timestamptz,
  voided_at  timestamptz,
  UNIQUE (user_id, code_hash)
);
CREATE INDEX queue_backup_codes_live ON auth.queue_backup_codes (user_id) WHERE used_at IS NULL AND voided_at IS NULL;

-- Abuse counters (per IP, per account) shared by every replica.
CREATE TABLE auth.abuse_counters (
  bucket       text        NOT NULL,
  subject      text        NOT NULL,
  window_start timestamptz NOT NULL,
  hits         integer     NOT NULL DEFAULT 0,
  failures     integer     NOT NULL DEFAULT 0,
  last_failure timestamptz,
  locked_until timestamptz,
  PRIMARY KEY (bucket, subject)
);

-- Security events, written in the same transaction as the change; a relay delivers them to
-- the audit service (crates/queue-audit-client). `id` is the audit event id (idempotency).
CREATE TABLE auth.audit_outbox (
  id              uuid        PRIMARY KEY,
  seq             bigserial   NOT NULL UNIQUE,
  event           jsonb       NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  attempts        integer     NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  delivered_at    timestamptz,
  audit_seq       bigint,
  audit_mac       text,
  failed_at       timestamptz,
  last_error      text
);
CREATE INDEX audit_outbox_pending ON auth.audit_outbox (seq) WHERE delivered_at IS NULL AND failed_at IS NULL;

GRANT SELECT, INSERT, UPDATE ON auth.users TO queue_auth_app;
GRANT SELECT, INSERT, UPDATE ON auth.queue_sessions TO queue_auth_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON auth.passkeys TO queue_auth_app;
GRANT SELECT, INSERT, DELETE ON auth.webauthn_ceremonies TO queue_auth_app;
GRANT SELECT, INSERT, UPDATE ON auth.email_verifications TO queue_auth_app;
GRANT SELECT, INSERT, UPDATE ON auth.mail_intents TO queue_auth_app;
GRANT SELECT, INSERT, UPDATE ON auth.queue_backup_codes TO queue_auth_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON auth.abuse_counters TO queue_auth_app;
GRANT SELECT, INSERT, UPDATE ON auth.audit_outbox TO queue_auth_app;
GRANT USAGE ON SEQUENCE auth.audit_outbox_seq_seq TO queue_auth_app;

SELECT queue_shadow.attach('auth.users');
SELECT queue_shadow.attach('auth.passkeys');
SELECT queue_shadow.attach('auth.queue_backup_codes');
