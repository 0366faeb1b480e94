pub mod backup_codes;
pub mod email;
pub mod sessions;
pub mod users;
pub mod webauthn;

use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::sessions::{Kind, Minted};
use crate::state::AuthState;

/// A minted session as the client receives it (the token appears here and in the cookie only).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionOut {
    pub id: Uuid,
    pub token: String,
    pub kind: Kind,
    pub user_id: Uuid,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionEnvelope {
    pub session: SessionOut,
}

/// 200 with the session in the body and in the `queue_session` cookie.
pub fn session_response(state: &AuthState, m: Minted, mut extra: serde_json::Value) -> HttpResponse {
    let max_age = (m.session.absolute_expires_at - state.now()).num_seconds().max(0);
    let cookie = state.cookie(Some(&m.token), max_age);
    let out = SessionOut {
        id: m.session.id,
        token: m.token.to_string(),
        kind: m.session.kind,
        user_id: m.session.user_id,
        idle_expires_at: m.session.idle_expires_at,
        absolute_expires_at: m.session.absolute_expires_at,
    };
    if let Some(obj) = extra.as_object_mut() {
        obj.insert("session".into(), serde_json::to_value(out).unwrap_or_default());
    }
    HttpResponse::Ok().insert_header(("set-cookie", cookie)).insert_header(("cache-control", "no-store")).json(extra)
}
