//! diesel's view of the `audit` schema (migrations/audit). Checked against the live schema by
//! the test `schema_matches_the_database`.

diesel::table! {
    audit.keys (epoch) {
        epoch -> Int4,
        provider -> Text,
        key_ref -> Text,
        encrypted_key -> Bytea,
        created_at -> Timestamptz,
        retired_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    audit.customer_audit_events (tenant_id, seq) {
        tenant_id -> Text,
        seq -> Int8,
        event_id -> Uuid,
        actor_type -> Text,
        actor_id -> Text,
        action -> Text,
        target_type -> Text,
        target_id -> Text,
        occurred_at -> Timestamptz,
        recorded_at -> Timestamptz,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        trace_id -> Nullable<Text>,
        payload_canonical -> Text,
        payload -> Jsonb,
        request_digest -> Bytea,
        prev_mac -> Bytea,
        mac -> Bytea,
        key_id -> Int4,
    }
}

diesel::table! {
    audit.chain_heads (tenant_id) {
        tenant_id -> Text,
        seq -> Int8,
        mac -> Bytea,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    audit.checkpoints (tenant_id, seq) {
        tenant_id -> Text,
        seq -> Int8,
        mac -> Bytea,
        algorithm -> Text,
        key_ref -> Text,
        signature -> Bytea,
        created_at -> Timestamptz,
    }
}
