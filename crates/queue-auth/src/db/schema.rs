// The tables of migrations/auth (hand-kept; the API tests exercise every column).

diesel::table! {
    auth.users (id) {
        id -> Uuid,
        tenant_id -> Text,
        email -> Text,
        email_verified_at -> Nullable<Timestamptz>,
        display_name -> Nullable<Text>,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    auth.queue_sessions (id) {
        id -> Uuid,
        token_hash -> Bytea,
        user_id -> Uuid,
        tenant_id -> Text,
        kind -> Text,
        created_at -> Timestamptz,
        last_seen_at -> Timestamptz,
        idle_expires_at -> Timestamptz,
        absolute_expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        revoked_reason -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        verified_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    auth.passkeys (id) {
        id -> Uuid,
        user_id -> Uuid,
        cred_id -> Bytea,
        passkey -> Jsonb,
        sign_count -> BigInt,
        name -> Text,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    auth.webauthn_ceremonies (id) {
        id -> Uuid,
        kind -> Text,
        user_id -> Nullable<Uuid>,
        session_id -> Nullable<Uuid>,
        state -> Jsonb,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    auth.email_verifications (id) {
        id -> Uuid,
        tenant_id -> Text,
        email -> Text,
        code_hash -> Bytea,
        link_hash -> Bytea,
        attempts -> Integer,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        consumed_at -> Nullable<Timestamptz>,
        ip -> Nullable<Text>,
    }
}

diesel::table! {
    auth.mail_intents (id) {
        id -> Uuid,
        recipient -> Text,
        subject -> Text,
        text_body -> Text,
        created_at -> Timestamptz,
        attempts -> Integer,
        next_attempt_at -> Timestamptz,
        claimed_until -> Nullable<Timestamptz>,
        sent_at -> Nullable<Timestamptz>,
        provider -> Nullable<Text>,
        provider_message_id -> Nullable<Text>,
        failed_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    auth.queue_backup_codes (id) {
        id -> Uuid,
        user_id -> Uuid,
        set_id -> Uuid,
        code_hash -> Bytea,
        created_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        voided_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    auth.abuse_counters (bucket, subject) {
        bucket -> Text,
        subject -> Text,
        window_start -> Timestamptz,
        hits -> Integer,
        failures -> Integer,
        last_failure -> Nullable<Timestamptz>,
        locked_until -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    auth.audit_outbox (id) {
        id -> Uuid,
        seq -> BigInt,
        event -> Jsonb,
        created_at -> Timestamptz,
        attempts -> Integer,
        next_attempt_at -> Timestamptz,
        delivered_at -> Nullable<Timestamptz>,
        audit_seq -> Nullable<BigInt>,
        audit_mac -> Nullable<Text>,
        failed_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
    }
}

diesel::joinable!(queue_sessions -> users (user_id));
diesel::joinable!(passkeys -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, queue_sessions, passkeys);
